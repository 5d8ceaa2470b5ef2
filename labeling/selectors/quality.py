"""Label quality: gold accuracy, agreement, position bias, disagreements and
per-annotator reliability. Reads only; the statistics live in core.stats."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from itertools import combinations
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from core import charts
from core.models import Report
from core.rank_stats import (
    kendall_tau_b,
    kendall_w,
    krippendorff_alpha_ordinal,
    midranks,
)
from core.reports import CachedReport, report_for_page
from core.stats import (
    cohen_kappa,
    is_position_biased,
    krippendorff_alpha_nominal,
    left_pick_rate,
    wilson_interval,
)
from labeling.models import Campaign, Comparison, ComparisonItem, Preference, Ranking

LABEL_SOURCES = (Preference.Source.ANNOTATOR,)


def _labels(campaign: Campaign) -> QuerySet[Preference]:
    return Preference.objects.filter(
        comparison__campaign=campaign, source__in=LABEL_SOURCES
    )


@dataclass(frozen=True)
class GoldScore:
    correct: int
    n: int
    accuracy: float | None
    lower: float
    upper: float


def gold_scores(*, campaign: Campaign) -> dict[int, GoldScore]:
    """Per annotator: answers on gold pairs that match the known answer."""
    rows = (
        _labels(campaign)
        .filter(comparison__is_gold=True)
        .values_list("annotator_id", "choice", "comparison__gold_choice")
    )
    tally: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for annotator_id, choice, gold in rows:
        tally[annotator_id][1] += 1
        tally[annotator_id][0] += int(choice == gold)
    out = {}
    for annotator_id, (correct, n) in tally.items():
        lo, hi = wilson_interval(correct, n)
        out[annotator_id] = GoldScore(correct, n, correct / n if n else None, lo, hi)
    return out


def _items(campaign: Campaign) -> dict[int, dict[int, str]]:
    """comparison id → {annotator id: choice} over non-gold pairs."""
    items: dict[int, dict[int, str]] = defaultdict(dict)
    for comparison_id, annotator_id, choice in (
        _labels(campaign)
        .filter(comparison__is_gold=False)
        .values_list("comparison_id", "annotator_id", "choice")
    ):
        items[comparison_id][annotator_id] = choice
    return items


def campaign_agreement(*, campaign: Campaign) -> dict[str, Any]:
    """Krippendorff's alpha (nominal; choices a / b / tie / both bad as four
    categories) over pairs with two or more labels, and Cohen's kappa for
    every annotator pair with at least two shared items."""
    items = _items(campaign)
    multi = {cid: labels for cid, labels in items.items() if len(labels) >= 2}
    alpha = krippendorff_alpha_nominal(
        {cid: list(labels.values()) for cid, labels in multi.items()}
    )
    shared: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    for labels in multi.values():
        for x, y in combinations(sorted(labels), 2):
            shared[(x, y)].append((labels[x], labels[y]))
    names = dict(
        get_user_model()
        .objects.filter(pk__in={a for pair in shared for a in pair})
        .values_list("pk", "username")
    )
    pairs = [
        {
            "annotators": [names.get(x, x), names.get(y, y)],
            "annotator_ids": [x, y],
            "items": len(v),
            "kappa": cohen_kappa(v),
            "raw_agreement": sum(p == q for p, q in v) / len(v),
        }
        for (x, y), v in sorted(shared.items())
        if len(v) >= 2
    ]
    return {
        "alpha": alpha,
        "items": len(multi),
        "labels": sum(len(v) for v in multi.values()),
        "pairs": pairs,
    }


def annotator_agreement_with_others(
    *, campaign: Campaign
) -> dict[int, tuple[float, int]]:
    """Per annotator: how often they match the majority of the other labels on
    shared items (ties among others count as no majority)."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for labels in _items(campaign).values():
        if len(labels) < 2:
            continue
        for annotator_id, choice in labels.items():
            others = Counter(
                c for a, c in labels.items() if a != annotator_id
            ).most_common()
            if len(others) > 1 and others[0][1] == others[1][1]:
                continue
            out[annotator_id][1] += 1
            out[annotator_id][0] += int(choice == others[0][0])
    return {a: (hits / n, n) for a, (hits, n) in out.items() if n}


def position_bias(*, campaign: Campaign) -> dict[int, dict[str, Any]]:
    """Per annotator: share of decisive picks (A or B) that went to the left."""
    picks: dict[int, list[bool]] = defaultdict(list)
    for annotator_id, choice, a_on_left in (
        _labels(campaign)
        .filter(choice__in=["a", "b"])
        .values_list("annotator_id", "choice", "a_on_left")
    ):
        picks[annotator_id].append((choice == "a") == a_on_left)
    out = {}
    for annotator_id, values in picks.items():
        rate, lo, hi = left_pick_rate(values)
        out[annotator_id] = {
            "rate": rate,
            "lower": lo,
            "upper": hi,
            "n": len(values),
            "flagged": is_position_biased(values),
        }
    return out


def annotator_report(*, campaign: Campaign) -> list[dict[str, Any]]:
    """One row per annotator: throughput, speed, gold accuracy, agreement and
    position bias, each with its sample size."""
    gold = gold_scores(campaign=campaign)
    bias = position_bias(campaign=campaign)
    agree = annotator_agreement_with_others(campaign=campaign)
    times: dict[int, list[int]] = defaultdict(list)
    spans: dict[int, list[Any]] = defaultdict(list)
    for annotator_id, spent, created in _labels(campaign).values_list(
        "annotator_id", "time_spent_ms", "created_at"
    ):
        if spent:
            times[annotator_id].append(spent)
        spans[annotator_id].append(created)
    users = dict(
        get_user_model().objects.filter(pk__in=spans).values_list("pk", "username")
    )
    rows = []
    for annotator_id, created in spans.items():
        created.sort()
        hours = max((created[-1] - created[0]).total_seconds() / 3600, 1 / 60)
        rows.append(
            {
                "annotator_id": annotator_id,
                "username": users.get(annotator_id, str(annotator_id)),
                "labels": len(created),
                "labels_per_hour": len(created) / hours if len(created) > 1 else None,
                "median_seconds": statistics.median(times[annotator_id]) / 1000
                if times[annotator_id]
                else None,
                "gold": gold.get(annotator_id),
                "agreement": agree.get(annotator_id),
                "left_bias": bias.get(annotator_id),
            }
        )
    rows.sort(key=lambda r: -r["labels"])
    return rows


def annotator_timeline(
    *, campaign: Campaign, annotator_id: int, days: int = 30
) -> list[dict[str, Any]]:
    """Labels and gold accuracy per day, for the annotator page's charts."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        _labels(campaign)
        .filter(annotator_id=annotator_id, created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            labels=Count("id"),
            gold=Count("id", filter=Q(comparison__is_gold=True)),
            gold_correct=Count(
                "id",
                filter=Q(comparison__is_gold=True, choice=F("comparison__gold_choice")),
            ),
        )
        .order_by("day")
    )
    return [
        {
            "day": r["day"],
            "labels": r["labels"],
            "gold": r["gold"],
            "gold_accuracy": r["gold_correct"] / r["gold"] if r["gold"] else None,
        }
        for r in rows
    ]


def annotator_daily_chart(*, timeline: Sequence[Mapping[str, Any]]) -> charts.Chart:
    """Labels per day from ``annotator_timeline`` rows (ordered by day), with
    the days between them that have none shown as 0."""
    per_day = {d["day"]: d["labels"] for d in timeline}
    days = []
    if per_day:
        day, last = min(per_day), max(per_day)
        while day <= last:
            days.append(day)
            day += timedelta(days=1)
    return charts.chart(
        id="labels-per-day",
        title="Labels per day",
        kind="bar",
        x=charts.axis("day", timezone.get_current_timezone_name()),
        y=charts.axis("labels", "per day", lo=0),
        series=[
            charts.series(
                label="labels",
                points=[(day.isoformat(), per_day.get(day, 0)) for day in days],
            )
        ],
    )


def disagreements(
    *,
    campaign: Campaign,
    limit: int = 100,
    among: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Pairs whose annotators disagree and that nobody adjudicated yet, most
    recently changed first. ``among`` restricts the search to those
    comparison ids, in that order (the cached quality report's
    ``disagreement_ids``), so that a page need not scan the campaign; a pair
    adjudicated since the report was computed is still left out."""
    candidates = (
        Comparison.objects.filter(campaign=campaign, is_gold=False, label_count__gte=2)
        .exclude(preferences__source=Preference.Source.ADJUDICATION)
        .select_related("prompt", "completion_a", "completion_b")
        .prefetch_related(
            Prefetch(
                "preferences",
                queryset=Preference.objects.filter(
                    source=Preference.Source.ANNOTATOR
                ).select_related("annotator"),
                to_attr="annotator_labels",
            )
        )
    )
    if among is not None:
        # A few spare ids for pairs adjudicated since the report was computed.
        order = {pk: i for i, pk in enumerate(among[: limit + 10])}
        ordered = sorted(candidates.filter(pk__in=order), key=lambda c: order[c.pk])
    else:
        ordered = list(candidates.order_by("-updated_at")[: limit * 5])
    out = []
    for comparison in ordered:
        labels = comparison.annotator_labels
        if len({p.choice for p in labels}) > 1:
            out.append({"comparison": comparison, "labels": labels})
            if len(out) >= limit:
                break
    return out


def quality_page_counts(*, campaign: Campaign) -> dict[str, int]:
    """The live counters above the quality page's cached figures: labels in
    the last hour (a range on the ``created_at`` index) and open pairs. The
    total comes with the cached report; ``campaign_stats`` would group every
    label by choice and annotator on each view."""
    since = timezone.now() - timedelta(hours=1)
    # A rank campaign's labels are its rankings (not their implied pairs).
    labels = (
        Ranking.objects if campaign.mode == Campaign.Mode.RANK else Preference.objects
    )
    return {
        "preferences_last_hour": labels.filter(
            comparison__campaign=campaign, created_at__gte=since
        ).count(),
        "comparisons_open": Comparison.objects.filter(
            campaign=campaign, status=Comparison.Status.OPEN
        ).count(),
    }


def annotator_reliability(*, campaign: Campaign) -> dict[int, float]:
    """A weight in [0, 1] per annotator for training: gold accuracy when they
    answered at least 5 gold pairs, else agreement with others on at least 5
    shared items, else 1.0 (no evidence against them)."""
    if campaign.mode == Campaign.Mode.RANK:
        return _ranking_reliability(campaign)
    gold = gold_scores(campaign=campaign)
    agree = annotator_agreement_with_others(campaign=campaign)
    annotators = set(
        _labels(campaign).values_list("annotator_id", flat=True).distinct()
    )
    out = {}
    for annotator_id in annotators:
        g = gold.get(annotator_id)
        a = agree.get(annotator_id)
        if g is not None and g.n >= 5 and g.accuracy is not None:
            out[annotator_id] = g.accuracy
        elif a is not None and a[1] >= 5:
            out[annotator_id] = a[0]
        else:
            out[annotator_id] = 1.0
    return out


def quality_report(*, campaign: Campaign) -> dict[str, Any]:
    """The parts of the quality page that walk every label (agreement, the
    per-annotator rows, the open disagreements), as JSON for the cached report. Computed by the
    reports refresh task, never in a request (see ``core.reports``)."""
    annotators = [
        {
            **row,
            "gold": asdict(row["gold"]) if row["gold"] is not None else None,
            "agreement": list(row["agreement"]) if row["agreement"] else None,
        }
        for row in annotator_report(campaign=campaign)
    ]
    extra: dict[str, Any] = {}
    if campaign.mode == Campaign.Mode.RANK:
        extra["ranking"] = ranking_quality(campaign=campaign)
    return {
        **extra,
        "agreement": campaign_agreement(campaign=campaign),
        "annotators": annotators,
        "disagreement_ids": [
            d["comparison"].pk for d in disagreements(campaign=campaign, limit=100)
        ],
    }


def quality_report_cached(*, campaign: Campaign) -> CachedReport:
    """The cached ``quality_report``; requests a refresh when it is missing or
    stale. Walks no labels."""
    return report_for_page(campaign_id=campaign.pk, kind=Report.Kind.QUALITY)


# --------------------------------------------------------------------------
# Rank campaigns: gold by Kendall's tau, agreement by Krippendorff's alpha
# (ordinal) and Kendall's W.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RankGoldScore:
    n: int
    # Mean Kendall's tau-b against the gold rankings (-1..1); None when no
    # gold ranking could be scored (one side tied every item).
    tau: float | None


def _rankings(
    campaign: Campaign, *, gold: bool
) -> list[tuple[int, int, dict[int, int]]]:
    """(comparison id, annotator id, {completion id: rank}) per ranking."""
    return [
        (comparison_id, annotator_id, dict(zip(order, ranks, strict=True)))
        for comparison_id, annotator_id, order, ranks in Ranking.objects.filter(
            comparison__campaign=campaign, comparison__is_gold=gold
        )
        .order_by("pk")
        .values_list("comparison_id", "annotator_id", "order", "ranks")
    ]


def ranking_gold_scores(*, campaign: Campaign) -> dict[int, RankGoldScore]:
    """Per annotator: Kendall's tau-b between each ranking of a gold ranked
    comparison and its gold ranking, averaged (1: the gold order exactly)."""
    gold: dict[int, dict[int, int]] = defaultdict(dict)
    for comparison_id, completion_id, rank in ComparisonItem.objects.filter(
        comparison__campaign=campaign,
        comparison__is_gold=True,
        gold_rank__isnull=False,
    ).values_list("comparison_id", "completion_id", "gold_rank"):
        gold[comparison_id][completion_id] = rank
    taus: dict[int, list[float]] = defaultdict(list)
    counted: dict[int, int] = defaultdict(int)
    for comparison_id, annotator_id, ranks in _rankings(campaign, gold=True):
        known = gold.get(comparison_id)
        if not known or set(known) != set(ranks):
            continue
        ids = sorted(known)
        counted[annotator_id] += 1
        tau = kendall_tau_b([ranks[i] for i in ids], [known[i] for i in ids])
        if tau is not None:
            taus[annotator_id].append(tau)
    return {
        a: RankGoldScore(n=n, tau=statistics.fmean(taus[a]) if taus[a] else None)
        for a, n in counted.items()
    }


def ranking_agreement(*, campaign: Campaign) -> dict[str, Any]:
    """Agreement among annotators on the ranked comparisons ranked by two or
    more of them: Krippendorff's alpha at the ordinal level (a unit is one
    completion of one comparison, valued by the ranks it got) and Kendall's
    W (per comparison, then the mean over comparisons, each weighted by its
    number of rankings)."""
    by_comparison: dict[int, list[dict[int, int]]] = defaultdict(list)
    for comparison_id, _annotator_id, ranks in _rankings(campaign, gold=False):
        by_comparison[comparison_id].append(ranks)
    multi = {cid: rs for cid, rs in by_comparison.items() if len(rs) >= 2}
    units: dict[tuple[int, int], list[float | None]] = defaultdict(list)
    ws: list[tuple[float, int]] = []
    for cid, rankings in multi.items():
        ids = sorted(rankings[0])
        for ranks in rankings:
            # Midranks: the same order is the same values whichever numbers
            # a tie was given ([1, 1, 2] and [1, 1, 3] are both [1.5, 1.5, 3]).
            mid = dict(zip(ids, midranks([ranks[i] for i in ids]), strict=True))
            for completion_id in ids:
                units[(cid, completion_id)].append(mid[completion_id])
        w = kendall_w([[r[i] for i in ids] for r in rankings])
        if w is not None:
            ws.append((w, len(rankings)))
    weight = sum(n for _w, n in ws)
    return {
        "alpha_ordinal": krippendorff_alpha_ordinal(units),
        "kendall_w": sum(w * n for w, n in ws) / weight if weight else None,
        "items": len(multi),
        "rankings": sum(len(rs) for rs in multi.values()),
    }


def ranking_quality(*, campaign: Campaign) -> dict[str, Any]:
    """A rank campaign's figures for the quality page and API: agreement,
    gold tau per annotator, and how many rankings found nothing acceptable."""
    gold = ranking_gold_scores(campaign=campaign)
    counts = Ranking.objects.filter(comparison__campaign=campaign).aggregate(
        rankings=Count("id"),
        none_acceptable=Count("id", filter=Q(none_acceptable=True)),
    )
    return {
        "agreement": ranking_agreement(campaign=campaign),
        "gold": {str(a): asdict(score) for a, score in gold.items()},
        **counts,
    }


def _ranking_reliability(campaign: Campaign) -> dict[int, float]:
    """``annotator_reliability`` for a rank campaign: (tau + 1) / 2 against
    gold rankings when an annotator ranked at least 5 gold comparisons, else
    1.0 (no evidence against them)."""
    gold = ranking_gold_scores(campaign=campaign)
    annotators = set(
        Ranking.objects.filter(comparison__campaign=campaign)
        .values_list("annotator_id", flat=True)
        .distinct()
    )
    out = {}
    for annotator_id in annotators:
        g = gold.get(annotator_id)
        if g is not None and g.n >= 5 and g.tau is not None:
            out[annotator_id] = (g.tau + 1) / 2
        else:
            out[annotator_id] = 1.0
    return out
