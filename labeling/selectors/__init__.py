"""Reads for the labeling app. Every lookup driven by user input is scoped to
the user who asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from core import roles
from labeling.exceptions import CampaignNotAvailable, LeaseNotFound
from labeling.models import (
    Campaign,
    Comparison,
    Completion,
    Lease,
    Preference,
    Prompt,
    Ranking,
)
from labeling.rendering import completion_html_of

UserLike = AbstractBaseUser | AnonymousUser


def campaign_list_for_user(*, user: UserLike) -> QuerySet[Campaign]:
    qs = Campaign.objects.all()
    if roles.is_reviewer(user):
        return qs
    if not roles.is_annotator(user):
        return qs.none()
    return (
        qs.filter(status=Campaign.Status.ACTIVE)
        .filter(Q(annotators__isnull=True) | Q(annotators=user))
        .distinct()
    )


def campaign_get_for_user(*, user: UserLike, campaign_id: int) -> Campaign:
    campaign = campaign_list_for_user(user=user).filter(pk=campaign_id).first()
    if campaign is None:
        raise CampaignNotAvailable(
            "That campaign does not exist or is not open to you."
        )
    return campaign


def campaign_get_for_annotator(*, user: UserLike, campaign_id: int) -> Campaign:
    """A campaign this user may label in now (active, and assigned or open)."""
    campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
    if campaign.status != Campaign.Status.ACTIVE:
        raise CampaignNotAvailable("This campaign is not accepting labels right now.")
    if not roles.is_annotator(user):
        raise CampaignNotAvailable("You are not an annotator.")
    return campaign


def lease_get_for_annotator(*, annotator: UserLike, lease_id: int) -> Lease:
    lease = (
        Lease.objects.select_related(
            "comparison__prompt",
            "comparison__completion_a",
            "comparison__completion_b",
            "campaign",
        )
        .filter(pk=lease_id, annotator=annotator)
        .first()
    )
    if lease is None:
        raise LeaseNotFound("That pair is not assigned to you.")
    return lease


def lease_campaign_for_annotator(*, annotator: UserLike, lease_id: int) -> Campaign:
    """The campaign of ``annotator``'s lease ``lease_id``, in one query."""
    campaign = Campaign.objects.filter(
        pk=Lease.objects.filter(pk=lease_id, annotator=annotator).values("campaign_id")[
            :1
        ]
    ).first()
    if campaign is None:
        raise LeaseNotFound("That pair is not assigned to you.")
    return campaign


@dataclass(frozen=True)
class BlindPair:
    """What an annotator may see of a leased pair: no model, no source."""

    lease_id: int
    campaign_id: int
    prompt: str | list[dict[str, str]]
    is_chat: bool
    left: str
    right: str
    expires_at: Any
    # Tokens after which the model was stopped (cut at ``max_new_tokens``
    # before it finished); None when the text is complete or imported.
    left_cut_at: int | None = None
    right_cut_at: int | None = None
    # The sanitised HTML of left and right (stored with each completion).
    left_html: str = ""
    right_html: str = ""


def _cut_at(generation: Any) -> int | None:
    if not isinstance(generation, dict) or generation.get("finished", True):
        return None
    tokens = generation.get("new_tokens") or generation.get("max_new_tokens")
    return int(tokens) if isinstance(tokens, int) and tokens > 0 else None


def lease_blind_pair(*, lease: Lease) -> BlindPair:
    """The annotator's view of a lease. Loads the pair's texts in one query
    unless the caller already did (``lease_get_for_annotator``)."""
    if (
        "comparison" in lease._state.fields_cache
        and "prompt" in lease.comparison._state.fields_cache
    ):
        comparison = lease.comparison
    else:
        comparison = (
            Comparison.objects.select_related("prompt", "completion_a", "completion_b")
            .only(
                "prompt__text",
                "prompt__messages",
                "completion_a__text",
                "completion_b__text",
                "completion_a__generation",
                "completion_b__generation",
                "completion_a__html",
                "completion_b__html",
            )
            .get(pk=lease.comparison_id)
        )
    return blind_pair_of(
        lease=lease,
        prompt=comparison.prompt,
        a=comparison.completion_a,
        b=comparison.completion_b,
    )


def blind_pair_of(
    *, lease: Lease, prompt: Prompt, a: Completion, b: Completion
) -> BlindPair:
    """What ``lease``'s annotator sees of a pair whose rows are loaded."""
    left, right = (a, b) if lease.a_on_left else (b, a)
    return BlindPair(
        lease_id=lease.pk,
        campaign_id=lease.campaign_id,
        prompt=prompt.content,
        is_chat=prompt.is_chat,
        left=left.text,
        right=right.text,
        expires_at=lease.expires_at,
        left_cut_at=_cut_at(left.generation),
        right_cut_at=_cut_at(right.generation),
        left_html=completion_html_of(left),
        right_html=completion_html_of(right),
    )


def preference_edit_refusal(
    *, preference: Preference, campaign: Campaign, now: Any = None
) -> str | None:
    """Why ``preference`` can no longer be changed by its annotator, or None
    while it still may be: only an annotator's own label, within
    ``campaign.label_edit_minutes`` of the first answer, and never once it
    is in a training snapshot."""
    if preference.source != Preference.Source.ANNOTATOR:
        return "Only labels given while labeling can be changed here."
    if preference.pk <= campaign.snapshot_preference_id:
        return "This label is already in a training snapshot, so it is final."
    if campaign.label_edit_minutes == 0:
        return "Labels in this campaign cannot be changed once given."
    if (now or timezone.now()) > preference_editable_until(
        preference=preference, campaign=campaign
    ):
        minutes = campaign.label_edit_minutes
        return (
            f"Labels can be changed for {minutes} minute{'s' if minutes != 1 else ''}"
            " after answering; this one is final now."
        )
    return None


def preference_editable_until(*, preference: Preference, campaign: Campaign) -> Any:
    return preference.created_at + timedelta(minutes=campaign.label_edit_minutes)


def preference_screen_answer(*, preference: Preference) -> dict[str, Any]:
    """A stored label in the sides its annotator saw (choice ``left``/
    ``right``/``tie``/``both_bad``; strength negative for left)."""
    sides = {
        Preference.Choice.A: "left" if preference.a_on_left else "right",
        Preference.Choice.B: "right" if preference.a_on_left else "left",
    }
    strength = preference.strength
    if strength is not None and not preference.a_on_left:
        strength = -strength
    return {
        "choice": sides.get(preference.choice, preference.choice),
        "strength": strength,
        "criteria": {
            name: sides.get(value, value)
            for name, value in (preference.criteria or {}).items()
        },
        "rationale": preference.rationale,
    }


SCREEN_CHOICE_LABELS = {
    "left": "Left is better",
    "right": "Right is better",
    "tie": "Tie",
    "both_bad": "Both bad",
}
STRENGTH_LABELS = {
    -3: "left, much",
    -2: "left, clearly",
    -1: "left, slightly",
    0: "about equal",
    1: "right, slightly",
    2: "right, clearly",
    3: "right, much",
}


@dataclass(frozen=True)
class AnsweredLabel:
    """One of an annotator's own labels, as they gave it on screen."""

    preference_id: int
    lease_id: int | None
    prompt_excerpt: str
    choice: str
    choice_label: str
    strength: int | None
    strength_label: str
    criteria: dict[str, str]
    rationale: str
    version: int
    answered_at: Any
    editable_until: Any
    refusal: str | None


def _answered(preference: Preference, campaign: Campaign, now: Any) -> AnsweredLabel:
    """``preference`` (its comparison's prompt loaded) as the card lists it."""
    answer = preference_screen_answer(preference=preference)
    prompt = preference.comparison.prompt
    text = prompt.text or " ".join(m.get("content", "") for m in prompt.messages or [])
    return AnsweredLabel(
        preference_id=preference.pk,
        lease_id=preference.lease_id,
        prompt_excerpt=" ".join(text.split())[:80],
        choice=answer["choice"],
        choice_label=SCREEN_CHOICE_LABELS.get(answer["choice"], answer["choice"]),
        strength=answer["strength"],
        strength_label=STRENGTH_LABELS.get(answer["strength"], "")
        if answer["strength"] is not None
        else "",
        criteria=answer["criteria"],
        rationale=answer["rationale"],
        version=preference.version,
        answered_at=preference.revised_at or preference.created_at,
        editable_until=preference_editable_until(
            preference=preference, campaign=campaign
        ),
        refusal=preference_edit_refusal(
            preference=preference, campaign=campaign, now=now
        ),
    )


def preference_for_lease(*, lease: Lease) -> AnsweredLabel | None:
    """The label its holder gave on ``lease``'s pair, if any."""
    preference = (
        Preference.objects.filter(
            comparison_id=lease.comparison_id, annotator_id=lease.annotator_id
        )
        .select_related("comparison__prompt")
        .first()
    )
    if preference is None:
        return None
    return _answered(preference, lease.campaign, timezone.now())


def _start_of_day() -> datetime:
    """Midnight today, local time: where "labels today" start."""
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def annotator_progress(*, campaign: Campaign, annotator: UserLike) -> dict[str, int]:
    start_of_day = _start_of_day()
    mine: QuerySet[Any] = Preference.objects.filter(
        comparison__campaign=campaign, annotator=annotator
    )
    if campaign.mode == Campaign.Mode.RANK:
        # A ranking is one label (its implied preferences are not more).
        mine = Ranking.objects.filter(
            comparison__campaign=campaign, annotator=annotator
        )
    counts = mine.aggregate(
        total=Count("id"), today=Count("id", filter=Q(created_at__gte=start_of_day))
    )
    pairs_left = (
        Comparison.objects.filter(campaign=campaign, status=Comparison.Status.OPEN)
        .exclude(done_by__contains=[annotator.pk])
        .count()
    )
    return {
        "labels_today": counts["today"],
        "labels_total": counts["total"],
        "pairs_left": pairs_left,
    }


# The labeling card counts the pairs left only up to this many: past it the
# card says "1,000+" (an exact count over a million pending pairs would cost
# more than the rest of the label).
CARD_PAIRS_LEFT_CAP = 1000


def annotator_card_progress(*, campaign: Campaign, annotator: UserLike) -> CardFooter:
    """What the labeling card shows of ``annotator_progress``, in one
    statement (``CARD_FOOTER_SQL``): ``labels_today``, and ``pairs_left``
    counted up to ``CARD_PAIRS_LEFT_CAP`` (``pairs_left_more`` says there
    are more). A new label's own statement reads the same
    (``preference_record_and_lease_next(card_footer=True)``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            CARD_FOOTER_SQL,
            card_footer_params(campaign=campaign, annotator=annotator),
        )
        row = cursor.fetchone()
    return card_footer_from_row(row)


# What the pair card shows with the pair, one statement: the annotator's
# labels today and the pairs left for them (counted up to a cap). ``labeled``
# is a pair labeled in the same statement (the label's own, in
# labeling.services.queue), whose writes that statement cannot see: it is
# left out of the pairs left, and ``card_footer_from_row`` counts its label
# (0: none). Named parameters: card_footer_params.
#
# A card is read on every label, so no part of it may grow with how many
# labels the annotator has given. "Today" counts the pairs they submitted
# since midnight through their submitted leases
# (labeling_lease_submitted_idx: annotator, campaign, submitted at), one
# table that names the campaign: a pair or a ranking is one label, in either
# kind of campaign. (Before, it joined every label they had ever given in
# any campaign to its pair to find the campaign: ~1 µs per label, on every
# card.) The pairs left stop at the cap.
CARD_FOOTER_SQL = """
SELECT (
    SELECT count(*) FROM labeling_lease l
    WHERE l.annotator_id = %(annotator)s AND l.campaign_id = %(campaign)s
      AND l.status = 'submitted' AND l.updated_at >= %(day)s
), (
    SELECT count(*) FROM (
        SELECT 1 FROM labeling_comparison c
        WHERE c.campaign_id = %(campaign)s AND c.status = 'open'
          AND NOT (c.done_by @> ARRAY[%(annotator)s]::bigint[])
          AND c.id <> %(labeled)s
        LIMIT %(cap)s
    ) AS open_pairs
)
"""
# The columns of CARD_FOOTER_SQL's row.
CARD_FOOTER_COLUMNS = 2
# What the card shows with the pair: the annotator's progress.
CardFooter = dict[str, Any]


def card_footer_params(
    *, campaign: Campaign, annotator: UserLike, labeled: int = 0
) -> dict[str, Any]:
    """``CARD_FOOTER_SQL``'s parameters."""
    return {
        "campaign": campaign.pk,
        "annotator": annotator.pk,
        "cap": CARD_PAIRS_LEFT_CAP + 1,
        "day": _start_of_day(),
        "labeled": labeled,
    }


def card_footer_from_row(row: Sequence[Any], *, labeled: bool = False) -> CardFooter:
    """The progress from a ``CARD_FOOTER_SQL`` row. ``labeled``: the statement
    that read the row wrote a label (its ``labeled`` pair's), counted here."""
    today, pairs_left = row
    return {
        "labels_today": today + 1 if labeled else today,
        "pairs_left": min(pairs_left, CARD_PAIRS_LEFT_CAP),
        "pairs_left_more": pairs_left > CARD_PAIRS_LEFT_CAP,
    }


CARD_RECENT_LABELS = 5


def annotator_recent_labels(
    *, campaign: Campaign, annotator: UserLike, recent: int = CARD_RECENT_LABELS
) -> list[AnsweredLabel]:
    """The annotator's ``recent`` latest labels in ``campaign``, newest
    first, each saying whether it may still be changed (the card's "Your
    recent labels", read when it is opened). Their newest submitted leases
    come first (``labeling_lease_submitted_idx``, however many they have);
    only those are joined to their labels and prompts."""
    newest_leases = Lease.objects.filter(
        annotator=annotator, campaign=campaign, status=Lease.Status.SUBMITTED
    ).order_by("-updated_at", "-id")[:recent]
    preferences = (
        Preference.objects.filter(
            lease__in=newest_leases.values("id"), source=Preference.Source.ANNOTATOR
        )
        .select_related("comparison__prompt")
        .order_by("-created_at", "-id")
    )
    now = timezone.now()
    return [_answered(preference, campaign, now) for preference in preferences]


def campaign_stats(*, campaign: Campaign) -> dict[str, Any]:
    # Implied pairs (of ranked comparisons) are never labeled directly.
    comparisons = Comparison.objects.filter(campaign=campaign).exclude(
        status=Comparison.Status.IMPLIED
    )
    by_status = dict(
        comparisons.values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    prefs = Preference.objects.filter(comparison__campaign=campaign)
    now = timezone.now()
    choices = dict(
        prefs.values_list("choice").annotate(n=Count("id")).values_list("choice", "n")
    )
    per_annotator = list(
        prefs.values("annotator_id", "annotator__username")
        .annotate(labels=Count("id"))
        .order_by("-labels")
    )
    return {
        "campaign_id": campaign.pk,
        "prompts": campaign.prompts.count(),
        "comparisons": sum(by_status.values()),
        "comparisons_open": by_status.get(Comparison.Status.OPEN, 0),
        "comparisons_complete": by_status.get(Comparison.Status.COMPLETE, 0),
        "preferences": sum(choices.values()),
        "preferences_last_hour": prefs.filter(
            created_at__gte=now - timedelta(hours=1)
        ).count(),
        "choices": {c: choices.get(c, 0) for c in Preference.Choice.values},
        "annotators": [
            {
                "annotator_id": row["annotator_id"],
                "username": row["annotator__username"],
                "labels": row["labels"],
            }
            for row in per_annotator
        ],
        **(_ranking_stats(campaign) if campaign.mode == Campaign.Mode.RANK else {}),
    }


def _ranking_stats(campaign: Campaign) -> dict[str, Any]:
    """A rank campaign's labels are rankings: count those per annotator
    (``preferences`` stays the implied pairwise count)."""
    rankings = Ranking.objects.filter(comparison__campaign=campaign)
    per_annotator = list(
        rankings.values("annotator_id", "annotator__username")
        .annotate(labels=Count("id"))
        .order_by("-labels")
    )
    return {
        "mode": Campaign.Mode.RANK,
        "rankings": rankings.count(),
        "rankings_none_acceptable": rankings.filter(none_acceptable=True).count(),
        "annotators": [
            {
                "annotator_id": row["annotator_id"],
                "username": row["annotator__username"],
                "labels": row["labels"],
            }
            for row in per_annotator
        ],
    }


TIE_POLICIES = ("skip", "both_orders")


def _as_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def preference_export_rows(
    *,
    campaign: Campaign,
    tie_policy: str = "skip",
    splits: list[str] | None = None,
    exclude_annotator_ids: list[int] | None = None,
    include_golden: bool = False,
    chunk_size: int = 2000,
    include_unacceptable: bool = False,
) -> Any:
    """Yield preferences as TRL preference rows (``prompt``, ``chosen``,
    ``rejected``) plus metadata, streamed from a server-side cursor so memory
    stays flat in the number of rows.

    Chat prompts give conversational rows (message lists). "both bad" is never
    exported; ties are skipped, or with ``tie_policy="both_orders"`` emitted
    once in each order with ``"tie": true`` (a reward model then learns no
    preference between them, only that both are comparable).

    A label its annotator changed is exported as its latest version
    (``version`` counts the changes; earlier ones stay in PreferenceRevision).

    A ranking's implied preferences (source "ranking") are rows like any
    other; those of a ranking flagged "none acceptable" are left out unless
    ``include_unacceptable``.
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {', '.join(TIE_POLICIES)}")
    # Gold pairs test annotators; they are not training data. Where a reviewer
    # adjudicated a pair, the ruling stands in for the annotators' labels.
    qs = (
        Preference.objects.filter(
            comparison__campaign=campaign, comparison__is_gold=False
        )
        .exclude(choice=Preference.Choice.BOTH_BAD)
        .filter(
            Q(source=Preference.Source.ADJUDICATION)
            | ~Exists(
                Preference.objects.filter(
                    comparison_id=OuterRef("comparison_id"),
                    source=Preference.Source.ADJUDICATION,
                )
            )
        )
    )
    if tie_policy == "skip":
        qs = qs.exclude(choice=Preference.Choice.TIE)
    if not include_unacceptable:
        qs = qs.exclude(ranking__none_acceptable=True)
    if splits:
        qs = qs.filter(comparison__prompt__split__in=splits)
    if exclude_annotator_ids:
        qs = qs.exclude(annotator_id__in=exclude_annotator_ids)
    if not include_golden:
        qs = qs.filter(comparison__prompt__is_golden=False)
    rows = qs.order_by("id").values_list(
        "id",
        "comparison_id",
        "annotator_id",
        "choice",
        "strength",
        "source",
        "version",
        "created_at",
        "comparison__prompt__text",
        "comparison__prompt__messages",
        "comparison__prompt__split",
        "comparison__completion_a__text",
        "comparison__completion_b__text",
    )
    for (
        pref_id,
        comparison_id,
        annotator_id,
        choice,
        strength,
        source,
        version,
        created_at,
        prompt_text,
        prompt_messages,
        split,
        text_a,
        text_b,
    ) in rows.iterator(chunk_size=chunk_size):
        chat = prompt_messages is not None
        prompt: Any = prompt_messages if chat else prompt_text
        pairs = (
            [(text_a, text_b)]
            if choice in (Preference.Choice.A, Preference.Choice.TIE)
            else [(text_b, text_a)]
        )
        if choice == Preference.Choice.TIE:
            pairs.append((text_b, text_a))
        for chosen, rejected in pairs:
            yield {
                "prompt": prompt,
                "chosen": _as_turn(chosen) if chat else chosen,
                "rejected": _as_turn(rejected) if chat else rejected,
                "tie": choice == Preference.Choice.TIE,
                "strength": abs(strength) if strength is not None else None,
                "split": split,
                "annotator_id": annotator_id,
                "preference_id": pref_id,
                "comparison_id": comparison_id,
                "source": source,
                "version": version,
                "created_at": created_at.isoformat(),
            }
