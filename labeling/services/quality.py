"""Writes for label quality: gold pairs and adjudication."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core import roles
from core.exceptions import Conflict
from core.reports import reports_mark_stale
from labeling.exceptions import LabelingError
from labeling.models import Comparison, Preference
from labeling.selectors.labels import adjudicators_available

logger = logging.getLogger(__name__)

ANSWERS = ("a", "b", "tie")


@transaction.atomic
def comparison_gold_set(*, comparison: Comparison, choice: str | None) -> Comparison:
    """Mark a pair as gold with its known answer (a, b or tie), or unmark it
    with ``None``. Gold pairs are mixed into every annotator's queue at the
    campaign's ``gold_rate`` and look like any other pair."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if comparison.is_ranked or comparison.parent_id is not None:
        raise LabelingError(
            "A ranked comparison is made gold with a ranking "
            "(labeling.services.ranking.ranked_gold_set), not a choice."
        )
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


RULINGS = ("a", "b", "tie", "both_bad")


def gold_choice_from_side(*, answer: str, a_on_left: bool) -> str | None:
    """The gold choice (a, b, tie; None: not gold) for an answer given as a
    side of the screen the reviewer saw: ``left``, ``right``, ``tie`` or
    ``none``. Reviewers, like annotators, see Left and Right, never A and B."""
    if answer == "left":
        return "a" if a_on_left else "b"
    if answer == "right":
        return "b" if a_on_left else "a"
    if answer == "tie":
        return "tie"
    if answer == "none":
        return None
    raise LabelingError("Answer with left, right, tie or none (not gold).")


@transaction.atomic
def comparison_adjudicate(
    *,
    comparison: Comparison,
    reviewer: AbstractBaseUser,
    choice: str,
    rationale: str = "",
    admin_note: str = "",
) -> Preference:
    """Record a reviewer's ruling on a disputed pair, as a preference with
    source "adjudication". The annotators' own labels stay as they were.

    Whoever labeled the pair may not rule on it, except an admin who gives an
    ``admin_note`` (when nobody else could, e.g. the only reviewer voted in
    blind review): one person has one row per pair, so their own label then
    becomes the ruling, and the note records what it was and why they ruled.
    The refusal names who else could adjudicate."""
    if not choice:
        raise LabelingError("Pick a ruling first: nothing was recorded.")
    if choice not in RULINGS:
        raise LabelingError("choice must be a, b, tie or both_bad.")
    comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if comparison.preferences.filter(source=Preference.Source.ADJUDICATION).exists():
        raise Conflict("This pair was already adjudicated.")
    own = comparison.preferences.filter(annotator=reviewer).first()
    if own is not None:
        return _adjudicate_over_own_label(
            own=own,
            reviewer=reviewer,
            choice=choice,
            rationale=rationale,
            admin_note=admin_note,
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


def _adjudicate_over_own_label(
    *,
    own: Preference,
    reviewer: AbstractBaseUser,
    choice: str,
    rationale: str,
    admin_note: str,
) -> Preference:
    """Call inside ``comparison_adjudicate``'s transaction (the pair row is
    locked)."""
    is_admin = roles.is_admin(reviewer)
    if not (is_admin and admin_note.strip()):
        others = adjudicators_available(comparison=own.comparison)
        who = (
            f"{', '.join(others)} could adjudicate it"
            if others
            else "no other reviewer is free to adjudicate it"
        )
        how = (
            "; as an admin you can still rule, with a note that is recorded"
            if is_admin
            else "; an admin can rule with a recorded note"
        )
        raise Conflict(f"You labeled this pair yourself: {who}{how}.")
    note = (
        f"Admin ruling over their own {own.get_source_display()} label "
        f"({own.get_choice_display()}): {admin_note.strip()}"
    )
    if rationale.strip():
        note += f" — {rationale.strip()}"
    own.choice = choice
    own.source = Preference.Source.ADJUDICATION
    own.a_on_left = True
    own.strength = None
    own.criteria = {}
    own.rationale = note[:1000]
    own.full_clean(exclude=["comparison", "annotator", "lease"])
    own.save(
        update_fields=[
            "choice",
            "source",
            "a_on_left",
            "strength",
            "criteria",
            "rationale",
            "updated_at",
        ]
    )
    reports_mark_stale(campaign_id=own.comparison.campaign_id)
    logger.info(
        "labeling.comparison.adjudicated_over_own_label comparison=%s admin=%s",
        own.comparison_id,
        reviewer.pk,
    )
    return own
