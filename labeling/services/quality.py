"""Writes for label quality: gold pairs and adjudication."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.exceptions import Conflict
from core.reports import reports_mark_stale
from labeling.exceptions import LabelingError
from labeling.models import Comparison, Preference

logger = logging.getLogger(__name__)

ANSWERS = ("a", "b", "tie")


@transaction.atomic
def comparison_gold_set(*, comparison: Comparison, choice: str | None) -> Comparison:
    """Mark a pair as gold with its known answer (a, b or tie), or unmark it
    with ``None``. Gold pairs are mixed into every annotator's queue at the
    campaign's ``gold_rate`` and look like any other pair."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if choice is None:
        comparison.is_gold, comparison.gold_choice = False, ""
    else:
        if choice not in ANSWERS:
            raise LabelingError(f"gold choice must be one of {', '.join(ANSWERS)}.")
        comparison.is_gold, comparison.gold_choice = True, choice
        if comparison.status == Comparison.Status.COMPLETE:
            comparison.status = Comparison.Status.OPEN  # gold pairs stay servable
    comparison.full_clean()
    comparison.save(update_fields=["is_gold", "gold_choice", "status", "updated_at"])
    reports_mark_stale(campaign_id=comparison.campaign_id)  # gold accuracy moves
    return comparison


@transaction.atomic
def comparison_adjudicate(
    *,
    comparison: Comparison,
    reviewer: AbstractBaseUser,
    choice: str,
    rationale: str = "",
) -> Preference:
    """Record a reviewer's ruling on a disputed pair, as a preference with
    source "adjudication". The annotators' own labels stay as they were."""
    if choice not in ("a", "b", "tie", "both_bad"):
        raise LabelingError("choice must be a, b, tie or both_bad.")
    comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if comparison.preferences.filter(source=Preference.Source.ADJUDICATION).exists():
        raise Conflict("This pair was already adjudicated.")
    if comparison.preferences.filter(annotator=reviewer).exists():
        raise Conflict(
            "You labeled this pair yourself; ask another reviewer to adjudicate."
        )
    preference = Preference(
        comparison=comparison,
        annotator=reviewer,
        choice=choice,
        a_on_left=True,
        rationale=rationale.strip()[:1000],
        source=Preference.Source.ADJUDICATION,
    )
    preference.full_clean(exclude=["comparison", "annotator", "lease"])
    preference.save()
    reports_mark_stale(campaign_id=comparison.campaign_id)
    logger.info(
        "labeling.comparison.adjudicated comparison=%s reviewer=%s",
        comparison.pk,
        reviewer.pk,
    )
    return preference
