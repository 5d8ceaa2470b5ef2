"""The reports refresh: recompute a campaign's cached statistics.

``models_hub.reports_refresh`` runs this on the ``default`` queue when labels
change (debounced, see ``core.reports``). It lives in the model hub because
it is the app that can read both what it reports on: versions and their
outcomes (here) and label quality (``labeling.selectors.quality``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from core.models import Report
from core.reports import report_store, reports_ensure, reports_refresh_claim
from core.stats import Outcome, win_rates
from labeling.models import Campaign, Preference
from labeling.selectors.quality import quality_report
from models_hub.models import Adapter
from models_hub.selectors import campaign_leaderboard, version_outcomes
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)

LEADERBOARD_BOOTSTRAPS = 200
WIN_RATE_BOOTSTRAPS = 1000


def leaderboard_report(
    *, campaign: Campaign, outcomes: list[Outcome] | None = None
) -> dict[str, Any]:
    """The leaderboard as JSON: Bradley-Terry rows with bootstrap intervals,
    the win-rate matrix, every pair's win rate with a bootstrap interval
    (``win_rates[a][b]``, read by the side-by-side page) and each policy
    candidate against the champion on held-out prompts (what the promotion
    gate sees; the rest of the report counts every label)."""
    if outcomes is None:
        outcomes = version_outcomes(campaign=campaign)
    board = campaign_leaderboard(
        campaign=campaign, n_boot=LEADERBOARD_BOOTSTRAPS, outcomes=outcomes
    )
    rates: dict[str, dict[str, dict[str, Any]]] = {}
    for (a, b), rate in win_rates(outcomes, n_boot=WIN_RATE_BOOTSTRAPS).items():
        rates.setdefault(a, {})[b] = rate._asdict()
    champion = Adapter.objects.filter(
        campaign=campaign, role=Adapter.Role.POLICY, status=Adapter.Status.CHAMPION
    ).first()
    gate = []
    champion_key = str(VersionKey.adapter(champion.pk)) if champion else None
    if champion_key is not None:
        held_out = win_rates(
            version_outcomes(campaign=campaign, held_out_only=True),
            n_boot=WIN_RATE_BOOTSTRAPS,
        )
        for row in board["rows"]:
            found = held_out.get((row["key"], champion_key))
            found = found._asdict() if found is not None else None
            if (
                row["key"] != champion_key
                and VersionKey.parse(row["key"]).kind == "adapter"
            ):
                gate.append({"key": row["key"], "label": row["label"], **(found or {})})
    return {
        "rows": [
            {
                **{k: v for k, v in row.items() if k != "adapter"},
                "adapter_id": row["adapter"].pk if row["adapter"] else None,
            }
            for row in board["rows"]
        ],
        "matrix": board["matrix"],
        "matrix_rows": board["matrix_rows"],
        "keys": board["keys"],
        "labels": board["labels"],
        "anchor": board["anchor"],
        "win_rates": rates,
        "champion": champion_key,
        "against_champion": gate,
    }


def campaign_reports_refresh(*, campaign_id: int) -> bool:
    """Recompute and store every report of ``campaign_id``. Returns ``False``
    when there was nothing to do (no stale report: a duplicate message) or the
    campaign is gone. All reads share one REPEATABLE READ snapshot, so the
    stored label count and last preference id describe exactly the labels
    the figures come from."""
    if not Campaign.objects.filter(pk=campaign_id).exists():
        return False
    # The rows exist before the snapshot, so a label recorded while this
    # computes finds them, marks them stale and queues the next refresh.
    reports_ensure(campaign_id=campaign_id)
    if not reports_refresh_claim(campaign_id=campaign_id):
        return False
    started = time.perf_counter()
    # Inside a caller's transaction (a test) the snapshot is already fixed.
    own_transaction = not connection.in_atomic_block
    with transaction.atomic():
        if own_transaction:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            return False
        totals = Preference.objects.filter(comparison__campaign=campaign).aggregate(
            n=Count("id"), last=Max("id")
        )
        leaderboard = leaderboard_report(campaign=campaign)
        quality = quality_report(campaign=campaign)
    computed_at = timezone.now()
    for kind, payload in (
        (Report.Kind.LEADERBOARD, leaderboard),
        (Report.Kind.QUALITY, quality),
    ):
        report_store(
            campaign_id=campaign_id,
            kind=kind,
            payload=payload,
            computed_at=computed_at,
            label_count=totals["n"],
            last_preference_id=totals["last"],
        )
    logger.info(
        "models_hub.reports.refreshed campaign=%s labels=%s seconds=%.2f",
        campaign_id,
        totals["n"],
        time.perf_counter() - started,
    )
    return True
