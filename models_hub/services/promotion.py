"""Automatic promotion: the loop's deciding half.

Every few seconds (beat) each campaign that promotes automatically looks at
its policy candidates whose round passed the guardrails: one with enough
labeled comparisons against the champion (or the base) and a lower 95% bound
of its win rate above 0.5 becomes the champion, its evidence recorded on the
promotion event; one whose upper bound is below 0.5 after as many labels is
retired (when the campaign retires losers), so it stops filling the queue.
The next rounds pair against the new champion.
"""

from __future__ import annotations

import logging

from django.db import transaction

from core.exceptions import Conflict
from models_hub.exceptions import PromotionBlocked
from models_hub.models import Adapter, AdapterEvent, GenerationJob, GenerationSettings
from models_hub.selectors import adapter_gate_evidence
from models_hub.services.registry import adapter_promote, adapter_retire, gate_decision

logger = logging.getLogger(__name__)


def promotion_candidates(*, settings_row: GenerationSettings) -> list[Adapter]:
    """Policy candidates of the campaign whose round passed its guardrails.

    A former champion is left out: it is a candidate again only so that a
    rollback can bring it back, and it lost to its successor by definition,
    so judging it here would retire the rollback target."""
    passed = GenerationJob.objects.filter(
        campaign=settings_row.campaign,
        kind=GenerationJob.Kind.CANDIDATE,
        status=GenerationJob.Status.SUCCEEDED,
        guardrails__passed=True,
    ).values("adapter_id")
    return list(
        Adapter.objects.filter(
            campaign=settings_row.campaign,
            role=Adapter.Role.POLICY,
            status=Adapter.Status.CANDIDATE,
            pk__in=passed,
        )
        .exclude(events__action=AdapterEvent.Action.PROMOTED)
        .select_related("campaign", "base_model")
        .order_by("version")
    )


def promotion_tick() -> int:
    """Promote or retire what the evidence allows. Returns how many
    adapters changed status."""
    changed = 0
    rows = GenerationSettings.objects.filter(auto_promote=True).select_related(
        "campaign"
    )
    for row in rows:
        best: tuple[float, Adapter, dict] | None = None
        for adapter in promotion_candidates(settings_row=row):
            evidence = adapter_gate_evidence(adapter=adapter)
            if evidence.get("n", 0) < max(row.gate_min_comparisons, 1):
                continue
            if gate_decision(evidence, settings_row=row) is None:
                if best is None or evidence["lower"] > best[0]:
                    best = (evidence["lower"], adapter, evidence)
            elif row.retire_losers and evidence["upper"] < 0.5:
                adapter_retire(
                    adapter=adapter,
                    actor=None,
                    reason=(
                        f"automatic: lost to {evidence['opponent']} "
                        f"(win rate {evidence['rate']:.2f}, upper 95% bound "
                        f"{evidence['upper']:.2f} over {evidence['n']} labels)"
                    ),
                )
                changed += 1
        if best is None:
            continue
        try:
            with transaction.atomic():
                adapter_promote(
                    adapter=best[1],
                    actor=None,
                    reason="automatic: passed the gate and its guardrails",
                )
        except (PromotionBlocked, Conflict) as exc:
            # Labels or the champion changed between reading and promoting.
            logger.info(
                "models_hub.promotion.skipped adapter=%s reason=%s", best[1].pk, exc
            )
            continue
        changed += 1
    return changed
