"""Reads for the drift watch: which versions a campaign serves, each one's
series of evaluations and baseline window, its human win rate against the
champion it replaced, the alerts, and the charts of the drift page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet

from core import charts
from core.stats import Outcome, win_rate
from labeling.models import Campaign
from ml.drift import DriftThresholds, PointData
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    DriftAlert,
    DriftPoint,
    DriftPolicy,
)
from models_hub.versions import VersionKey

SERIES_LIMIT = 500  # newest points per version and source on the page


@dataclass(frozen=True)
class WatchedVersion:
    """A version the campaign's alias serves: the champion (else the base)
    or the deployment's candidate."""

    role: str  # "champion" or "candidate"
    adapter: Adapter | None
    base_model: BaseModelVersion


def drift_policy_for(*, campaign: Campaign) -> DriftPolicy:
    """The campaign's policy, or an unsaved one with the defaults (a read
    never writes it)."""
    policy = DriftPolicy.objects.filter(campaign=campaign).first()
    return policy if policy is not None else DriftPolicy(campaign=campaign)


def drift_thresholds(policy: DriftPolicy) -> DriftThresholds:
    return DriftThresholds(
        mean_drop_sd=policy.mean_drop_sd,
        psi_limit=policy.psi_limit,
        empty_rate_increase=policy.empty_rate_increase,
        truncated_rate_increase=policy.truncated_rate_increase,
        refusal_rate_increase=policy.refusal_rate_increase,
        min_win_rate=policy.min_win_rate,
    )


def version_watched_since(*, adapter: Adapter | None) -> datetime | None:
    """When the version last became what it is now: the adapter's latest
    promotion, or the rollback that made it champion again; None for the
    base or a version never promoted (its series starts at its first
    point)."""
    if adapter is None:
        return None
    event = (
        AdapterEvent.objects.filter(adapter=adapter)
        .filter(
            Q(action=AdapterEvent.Action.PROMOTED)
            | Q(
                action=AdapterEvent.Action.ROLLED_BACK,
                previous_champion__isnull=False,
            )
        )
        .order_by("-created_at", "-id")
        .first()
    )
    return event.created_at if event is not None else None


def _series(
    *, campaign: Campaign, adapter: Adapter | None, base_model: BaseModelVersion
) -> QuerySet[DriftPoint]:
    qs = DriftPoint.objects.filter(campaign=campaign, base_model=base_model)
    return qs.filter(adapter=adapter) if adapter else qs.filter(adapter__isnull=True)


def drift_baseline(*, point: DriftPoint, size: int) -> list[DriftPoint]:
    """The baseline window of ``point``: the first ``size`` points of its
    version and source since the version's promotion (see
    ``version_watched_since``), taken before ``point``. Fewer than ``size``
    means the window is still filling and nothing is checked yet."""
    since = version_watched_since(adapter=point.adapter)
    qs = _series(
        campaign=point.campaign, adapter=point.adapter, base_model=point.base_model
    ).filter(source=point.source)
    if since is not None:
        qs = qs.filter(taken_at__gte=since)
    window = list(qs.order_by("taken_at", "id")[:size])
    if any(p.pk == point.pk for p in window):
        return []  # the point is itself part of the window
    return window if len(window) == size else []


def point_data(point: DriftPoint) -> PointData:
    """What the checks in ``ml.drift`` read of a stored point."""
    rate = None
    if point.win_rate is not None:
        rate = {
            "rate": point.win_rate,
            "lower": point.win_rate_lower,
            "upper": point.win_rate_upper,
            "n": point.win_rate_n,
            "opponent_label": point.details.get("win_rate_opponent_label", ""),
        }
    return PointData(
        scores=[float(v) for v in point.values.get("scores", [])],
        lengths=[float(v) for v in point.values.get("lengths", [])],
        figures={
            "n": point.n,
            "empty_rate": point.empty_rate,
            "truncated_rate": point.truncated_rate,
            "refusal_rate": point.refusal_rate,
        },
        win_rate=rate,
    )


def adapter_previous_champion(*, adapter: Adapter) -> tuple[str, str]:
    """Version key and label of the champion ``adapter`` replaced at its
    latest promotion (the base when it was the first, or was never
    promoted: a deployed candidate is judged against the champion it would
    replace)."""
    event = (
        AdapterEvent.objects.filter(
            adapter=adapter, action=AdapterEvent.Action.PROMOTED
        )
        .select_related("previous_champion")
        .order_by("-created_at", "-id")
        .first()
    )
    if event is None and adapter.status != Adapter.Status.CHAMPION:
        champion = Adapter.objects.filter(
            campaign=adapter.campaign_id,
            role=adapter.role,
            status=Adapter.Status.CHAMPION,
        ).first()
        if champion is not None and champion.pk != adapter.pk:
            return str(VersionKey.adapter(champion.pk)), f"{champion} (champion)"
    previous = event.previous_champion if event is not None else None
    if previous is not None:
        return str(VersionKey.adapter(previous.pk)), str(previous)
    return str(VersionKey.base(adapter.base_model_id)), f"{adapter.base_model} (base)"


def version_win_rate(
    *, outcomes: Sequence[Outcome], adapter: Adapter | None
) -> dict[str, Any]:
    """The human win rate of ``adapter`` against the previous champion over
    ``outcomes`` (the campaign's ``version_outcomes``, read once for every
    watched version; scored as the promotion gate scores them: ties half, a
    95% bootstrap interval, but over every label, traffic samples included,
    not only held-out prompts). Empty for the base, which replaced nothing."""
    if adapter is None:
        return {}
    opponent, label = adapter_previous_champion(adapter=adapter)
    result = win_rate(outcomes, str(VersionKey.adapter(adapter.pk)), opponent)
    return {
        "rate": result.rate,
        "lower": result.lower,
        "upper": result.upper,
        "n": result.n,
        "opponent": opponent,
        "opponent_label": label,
    }


def drift_alert_list(
    *, campaign: Campaign | None = None, open_only: bool | None = None
) -> QuerySet[DriftAlert]:
    qs = DriftAlert.objects.select_related(
        "campaign", "adapter", "base_model", "acknowledged_by"
    )
    if campaign is not None:
        qs = qs.filter(campaign=campaign)
    if open_only is True:
        qs = qs.filter(resolved_at__isnull=True)
    elif open_only is False:
        qs = qs.filter(resolved_at__isnull=False)
    return qs.order_by("-opened_at", "-id")


def drift_open_alert_counts(campaign_ids: Iterable[int]) -> dict[int, int]:
    """Open alerts per campaign, for a whole list of campaigns in one query."""
    rows = (
        DriftAlert.objects.filter(
            campaign_id__in=list(campaign_ids), resolved_at__isnull=True
        )
        .values("campaign_id")
        .annotate(n=Count("id"))
    )
    return {row["campaign_id"]: row["n"] for row in rows}


@dataclass
class VersionSeries:
    key: str
    label: str
    adapter: Adapter | None
    base_model: BaseModelVersion
    points: list[DriftPoint] = field(default_factory=list)


def drift_series(*, campaign: Campaign) -> list[VersionSeries]:
    """Every evaluated version's points (oldest first, the newest
    ``SERIES_LIMIT`` per version), in one query."""
    points = list(
        DriftPoint.objects.filter(campaign=campaign)
        .select_related("adapter", "base_model")
        .order_by("-taken_at", "-id")[: SERIES_LIMIT * 4]
    )
    by_version: dict[tuple[int | None, int], VersionSeries] = {}
    for point in reversed(points):
        key = (point.adapter_id, point.base_model_id)
        if key not in by_version:
            by_version[key] = VersionSeries(
                key=str(
                    VersionKey.of(
                        adapter_id=point.adapter_id, base_model_id=point.base_model_id
                    )
                ),
                label=(
                    f"{point.adapter.name} v{point.adapter.version}"
                    if point.adapter is not None
                    else f"{point.base_model.name} (base)"
                ),
                adapter=point.adapter,
                base_model=point.base_model,
            )
        by_version[key].points.append(point)
    return list(by_version.values())


SOURCE_WORDS = dict(DriftPoint.Source.choices)


def drift_charts(series: list[VersionSeries]) -> list[charts.Chart]:
    """The drift page's charts: x is hours since the first point shown."""
    points = [p for s in series for p in s.points]
    if not points:
        return []
    origin = min(p.taken_at for p in points)

    def hours(p: DriftPoint) -> float:
        return round((p.taken_at - origin).total_seconds() / 3600, 3)

    def lines(
        attr: str, *, sources: Iterable[str] = ("golden", "served")
    ) -> list[charts.Series]:
        out = []
        for s in series:
            for source in sources:
                pts = [
                    [hours(p), getattr(p, attr)]
                    for p in s.points
                    if p.source == source and getattr(p, attr) is not None
                ]
                if pts:
                    out.append(
                        charts.series(
                            label=f"{s.label} · {SOURCE_WORDS[source]}", points=pts
                        )
                    )
        return out

    x = charts.axis("hours since the first evaluation", "h", lo=0)
    made = [
        charts.chart(
            id="drift-rm",
            title="Reward-model score (mean)",
            kind="line",
            x=x,
            y=charts.axis("mean score"),
            series=lines("rm_mean"),
        ),
        charts.chart(
            id="drift-length",
            title="Output length (mean)",
            kind="line",
            x=x,
            y=charts.axis("length", "characters", lo=0),
            series=lines("length_mean"),
        ),
    ]
    for attr, title in (
        ("empty_rate", "Empty outputs"),
        ("truncated_rate", "Outputs cut at the token limit"),
        ("refusal_rate", "Refusal-like outputs"),
    ):
        made.append(
            charts.chart(
                id=f"drift-{attr.replace('_', '-')}",
                title=title,
                kind="line",
                x=x,
                y=charts.axis("share of outputs", lo=0, hi=1),
                series=lines(attr),
            )
        )
    made.append(
        charts.chart(
            id="drift-win-rate",
            title="Human win rate against the previous champion",
            kind="line",
            x=x,
            y=charts.axis("win rate", lo=0, hi=1),
            series=lines("win_rate", sources=("golden",)),
        )
    )
    return [c for c in made if charts.chart_has_points(c)]
