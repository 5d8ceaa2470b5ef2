"""Reads for the reviewer's labels browser and pair page: labels filtered by
annotator, choice, agreement, gold and date; one pair with all its labels;
who may still adjudicate a pair."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from core import roles
from core.diff import word_diff
from core.exceptions import NotFound
from labeling.models import Campaign, Comparison, Preference
from labeling.selectors import preference_export_rows

AGREEMENTS = ("agreed", "disagreed", "single")


@dataclass(frozen=True)
class LabelFilters:
    """What the labels browser narrows to; empty fields do not filter.
    ``agreement`` reads the pair's annotator labels: ``agreed`` (two or more,
    all the same choice), ``disagreed`` (two or more choices) or ``single``
    (one annotator label)."""

    annotator_id: int | None = None
    choice: str = ""
    agreement: str = ""
    gold: bool | None = None
    since: date | None = None
    until: date | None = None


def _pair_annotator_labels() -> QuerySet[Preference]:
    return (
        Preference.objects.filter(
            comparison_id=OuterRef("comparison_id"),
            source=Preference.Source.ANNOTATOR,
        )
        .order_by()
        .values("comparison_id")
    )


def label_list(*, campaign: Campaign, filters: LabelFilters) -> QuerySet[Preference]:
    """The campaign's labels (every source), newest first, narrowed by
    ``filters``. Dates are days in the current time zone, both ends included."""
    qs = (
        Preference.objects.filter(comparison__campaign=campaign)
        .select_related("annotator", "comparison")
        .order_by("-created_at", "-id")
    )
    if filters.annotator_id is not None:
        qs = qs.filter(annotator_id=filters.annotator_id)
    if filters.choice:
        qs = qs.filter(choice=filters.choice)
    if filters.gold is not None:
        qs = qs.filter(comparison__is_gold=filters.gold)
    if filters.since is not None:
        qs = qs.filter(created_at__date__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__date__lte=filters.until)
    if filters.agreement:
        if filters.agreement not in AGREEMENTS:
            raise ValueError(f"agreement must be one of {', '.join(AGREEMENTS)}")
        siblings = _pair_annotator_labels()
        qs = qs.annotate(
            pair_labels=Coalesce(
                Subquery(siblings.annotate(n=Count("id")).values("n")),
                0,
                output_field=IntegerField(),
            ),
            pair_choices=Coalesce(
                Subquery(
                    siblings.annotate(n=Count("choice", distinct=True)).values("n")
                ),
                0,
                output_field=IntegerField(),
            ),
        )
        qs = {
            "single": qs.filter(pair_labels__lte=1),
            "agreed": qs.filter(pair_labels__gte=2, pair_choices=1),
            "disagreed": qs.filter(pair_choices__gte=2),
        }[filters.agreement]
    return qs


def label_annotators(*, campaign: Campaign) -> list[tuple[int, str]]:
    """(id, username) of everyone with a label in the campaign, by name."""
    return list(
        get_user_model()
        .objects.filter(preferences__comparison__campaign=campaign)
        .distinct()
        .order_by("username")
        .values_list("pk", "username")
    )


def label_export_rows(
    *,
    campaign: Campaign,
    filters: LabelFilters,
    tie_policy: str = "skip",
    splits: Sequence[str] = (),
    include_golden: bool = False,
) -> Iterator[dict[str, Any]]:
    """The training export (``preference_export_rows``, with its rules and
    options) restricted to the labels ``filters`` select. The export's own
    rules still hold: gold pairs and "both bad" are never exported, and an
    adjudicated pair exports the ruling only."""
    wanted = set(
        label_list(campaign=campaign, filters=filters)
        .order_by()
        .values_list("pk", flat=True)
    )
    if not wanted:
        return
    for row in preference_export_rows(
        campaign=campaign,
        tie_policy=tie_policy,
        splits=list(splits),
        include_golden=include_golden,
    ):
        if row["preference_id"] in wanted:
            yield row


def comparison_get_for_review(*, campaign: Campaign, comparison_id: int) -> Comparison:
    """A pair of ``campaign`` (the caller scoped the campaign to the user)
    with its texts loaded."""
    comparison = (
        Comparison.objects.select_related("prompt", "completion_a", "completion_b")
        .filter(campaign=campaign, pk=comparison_id)
        .first()
    )
    if comparison is None:
        raise NotFound("That pair is not in this campaign.")
    return comparison


SIDE_NAMES = {"left": "Left", "right": "Right"}


def _side_of(choice: str, *, a_on_left: bool) -> str:
    """A choice against the completions, as a side of a screen that shows A
    on the left when ``a_on_left``."""
    if choice in ("a", "b"):
        return "left" if (choice == "a") == a_on_left else "right"
    return choice


def pair_view(*, comparison: Comparison, a_on_left: bool) -> dict[str, Any]:
    """A pair as a reviewer's page shows it, A on the left when
    ``a_on_left``: both texts with their word diff, the gold answer and every
    label as sides of this screen (and the side each annotator saw)."""
    a, b = comparison.completion_a.text, comparison.completion_b.text
    left, right = (a, b) if a_on_left else (b, a)
    left_diff, right_diff = word_diff(left, right)
    labels = [
        {
            "preference": p,
            "side": _side_of(p.choice, a_on_left=a_on_left),
            "seen_side": _side_of(p.choice, a_on_left=p.a_on_left),
        }
        for p in comparison.preferences.select_related("annotator").order_by(
            "created_at", "id"
        )
    ]
    return {
        "comparison": comparison,
        "a_on_left": a_on_left,
        "left": left,
        "right": right,
        "left_letter": "A" if a_on_left else "B",
        "right_letter": "B" if a_on_left else "A",
        "left_diff": left_diff,
        "right_diff": right_diff,
        "gold_side": _side_of(comparison.gold_choice, a_on_left=a_on_left)
        if comparison.is_gold
        else "",
        "labels": labels,
    }


def adjudicators_available(*, comparison: Comparison) -> list[str]:
    """Usernames of active reviewers and admins with no label on the pair:
    the people who may adjudicate it."""
    labeled = comparison.preferences.values("annotator_id")
    return list(
        get_user_model()
        .objects.filter(is_active=True)
        .filter(
            Q(is_superuser=True) | Q(groups__name__in=[roles.REVIEWER, roles.ADMIN])
        )
        .exclude(pk__in=labeled)
        .distinct()
        .order_by("username")
        .values_list("username", flat=True)
    )
