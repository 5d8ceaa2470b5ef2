"""The labeling queue: leases and preferences.

``comparison_lease_next`` hands an annotator the next pair in one SQL
statement (``FOR UPDATE SKIP LOCKED`` over an index that matches the filter),
and ``preference_record`` stores a label idempotently. Live leases are the
non-expired entries of ``Comparison.lease_expiries``: an expired lease frees
its slot by the clock alone, with no sweeper needed for correctness.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from core.reports import reports_mark_stale
from labeling.exceptions import (
    CampaignNotAvailable,
    ComparisonFull,
    LabelEditRefused,
    LabelingError,
    LabelNotFound,
    LeaseNotFound,
    NothingToLabel,
)
from labeling.models import (
    Campaign,
    Comparison,
    Lease,
    Preference,
    PreferenceRevision,
)
from labeling.selectors import (
    campaign_get_for_annotator,
    preference_edit_refusal,
    preference_screen_answer,
)

logger = logging.getLogger(__name__)


# Defined beside the one service that raises them (labeling.exceptions
# belongs to the campaign and quality services' owners in this change).
SCREEN_CHOICES = ("left", "right", "tie", "both_bad")

# One statement: pick the best open pair this annotator may take, lock it
# (skipping pairs another transaction holds), and reserve a slot on it. The
# conditions read only the row's own columns, so a pair that another
# annotator reserved between our snapshot and our lock is re-checked by
# PostgreSQL against its new version and skipped when it became full.
_LEASE_NEXT_SQL = """
WITH picked AS (
    SELECT c.id
    FROM labeling_comparison c
    WHERE c.campaign_id = %(campaign_id)s
      AND c.status = 'open'
      AND NOT c.is_gold
      AND NOT (c.done_by @> ARRAY[%(annotator_id)s]::bigint[])
      AND c.label_count
          + (SELECT count(*) FROM unnest(c.lease_expiries) AS e WHERE e > %(now)s)
          < %(k)s
    ORDER BY (c.priority + c.priority_boost) DESC, c.id
    LIMIT 1
    FOR UPDATE OF c {lock_mode}
)
UPDATE labeling_comparison c
SET lease_expiries = ARRAY(
        SELECT e FROM unnest(c.lease_expiries) AS e WHERE e > %(now)s
    ) || %(expires_at)s::timestamptz,
    updated_at = %(now)s
FROM picked
WHERE c.id = picked.id
RETURNING c.id
"""

# Gold pairs have no k: every annotator answers each once, so nothing on the
# row needs reserving and a plain locking read is the one statement.
_GOLD_NEXT_SQL = """
SELECT c.id
FROM labeling_comparison c
WHERE c.campaign_id = %(campaign_id)s
  AND c.status = 'open'
  AND c.is_gold
  AND NOT (c.done_by @> ARRAY[%(annotator_id)s]::bigint[])
ORDER BY c.id
LIMIT 1
FOR UPDATE OF c SKIP LOCKED
"""

# Gold mixing and side shuffling; tests may swap in a seeded generator.
_rng: random.Random = random.SystemRandom()


@dataclass(frozen=True)
class RecordResult:
    preference: Preference
    created: bool
    # True when this submit changed an earlier answer (a new version).
    revised: bool = False


def _live_expiries(
    comparison: Comparison, *, now: Any, without: Any = None
) -> list[Any]:
    """The comparison's live lease expiries, less one entry for ``without``
    (the lease being submitted or given back)."""
    expiries = list(comparison.lease_expiries)
    if without in expiries:
        expiries.remove(without)
    return [e for e in expiries if e > now]


def lease_create_for(
    *, comparison: Comparison, annotator: AbstractBaseUser, now: Any
) -> Lease:
    """Lease one given pair (blind review picks its own pairs). Call inside
    ``atomic()`` with the Comparison row locked; the slot is recorded on the
    row as the queue statement does."""
    expires_at = now + timedelta(seconds=comparison.campaign.lease_ttl_seconds)
    comparison.lease_expiries = [*_live_expiries(comparison, now=now), expires_at]
    comparison.save(update_fields=["lease_expiries", "updated_at"])
    return Lease.objects.create(
        campaign=comparison.campaign,
        comparison=comparison,
        annotator=annotator,
        a_on_left=_rng.random() < 0.5,
        expires_at=expires_at,
    )


@transaction.atomic
def comparison_lease_next(*, campaign: Campaign, annotator: AbstractBaseUser) -> Lease:
    """Lease the next pair of ``campaign`` to ``annotator``.

    Returns the annotator's live lease in this campaign when there is one
    (two tabs show the same pair); otherwise reserves a new pair. The caller
    has checked that the annotator may label in ``campaign``.
    Raises ``NothingToLabel`` when the queue has nothing for this annotator,
    and ``CampaignNotAvailable`` when ``campaign`` is paused or archived: no
    pair is handed out then, not even a live lease leased before the pause
    (a submit for that lease is still accepted, see ``preference_record``).
    """
    if campaign.status != Campaign.Status.ACTIVE:
        raise CampaignNotAvailable("This campaign is not accepting labels right now.")
    now = timezone.now()
    with connection.cursor() as cursor:
        # Serialises one annotator's own requests (double clicks, two tabs);
        # different annotators never wait on each other here.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [7141, annotator.pk])
    live = (
        Lease.objects.select_related("comparison")
        .filter(
            annotator=annotator,
            campaign=campaign,
            status=Lease.Status.ACTIVE,
            expires_at__gt=now,
        )
        .order_by("-expires_at")
        .first()
    )
    if live is not None and live.comparison.status == Comparison.Status.OPEN:
        return live

    expires_at = now + timedelta(seconds=campaign.lease_ttl_seconds)
    params = {
        "campaign_id": campaign.pk,
        "annotator_id": annotator.pk,
        "k": campaign.overlap_k,
        "now": now,
        "expires_at": expires_at,
    }
    with connection.cursor() as cursor:
        row = None
        if campaign.gold_rate > 0 and _rng.random() < campaign.gold_rate:
            cursor.execute(_GOLD_NEXT_SQL, params)
            row = cursor.fetchone()
        if row is None:
            cursor.execute(_LEASE_NEXT_SQL.format(lock_mode="SKIP LOCKED"), params)
            row = cursor.fetchone()
        if row is None:
            # Every candidate may have been locked by someone else's
            # in-flight lease. Ask again, this time waiting for those
            # (short) transactions: a pair whose slots they filled is
            # re-checked and passed over, so we never report an empty queue
            # while a free slot is only momentarily locked.
            cursor.execute(_LEASE_NEXT_SQL.format(lock_mode=""), params)
            row = cursor.fetchone()
    if row is None:
        raise NothingToLabel("No pairs are waiting for you in this campaign.")
    lease = Lease(
        campaign=campaign,
        comparison_id=row[0],
        annotator=annotator,
        a_on_left=_rng.random() < 0.5,
        expires_at=expires_at,
    )
    lease.save()
    return lease


def _to_completion_choice(screen_choice: str, *, a_on_left: bool) -> str:
    if screen_choice == "left":
        return Preference.Choice.A if a_on_left else Preference.Choice.B
    if screen_choice == "right":
        return Preference.Choice.B if a_on_left else Preference.Choice.A
    if screen_choice == "tie":
        return Preference.Choice.TIE
    if screen_choice == "both_bad":
        return Preference.Choice.BOTH_BAD
    raise LabelingError(f"choice must be one of {', '.join(SCREEN_CHOICES)}.")


def _to_completion_strength(strength: int | None, *, a_on_left: bool) -> int | None:
    # On screen, negative means "left is better"; stored, negative means "A".
    if strength is None:
        return None
    if not -3 <= strength <= 3:
        raise LabelingError("strength must be between -3 and 3.")
    return strength if a_on_left else -strength


def _check_strength_agrees(choice: str, strength: int | None) -> None:
    """Refuse a strength that points to the other side than the choice
    (screen sides: negative strength means left is better)."""
    if strength is None:
        return
    if (choice == "left" and strength > 0) or (choice == "right" and strength < 0):
        side = "right" if strength > 0 else "left"
        raise LabelingError(
            f"The strength says {side} is better but the choice is {choice}: "
            "pick the strength on the side you chose, or none.",
            extra={"field": "strength"},
        )
    if choice == "tie" and strength != 0:
        raise LabelingError(
            "A tie cannot be better on one side: pick 'about equal' or no strength.",
            extra={"field": "strength"},
        )


@transaction.atomic
def preference_record(
    *,
    lease_id: int,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int | None = None,
    criteria: dict[str, str] | None = None,
    rationale: str = "",
    time_spent_ms: int | None = None,
    client_request_id: str = "",
    source: str = Preference.Source.ANNOTATOR,
    revise: bool = False,
) -> RecordResult:
    """Record ``annotator``'s label for the pair behind ``lease_id``.

    ``choice``, ``strength`` and ``criteria`` are expressed in screen sides
    (left/right) and stored against the completions; a strength pointing to
    the other side than ``choice`` raises ``LabelingError``. Idempotent: a
    second submit for the same pair (double click, retry, another tab)
    returns the first preference with ``created=False``. With ``revise`` (the
    labeling page: an annotator went back and answered again), a second
    submit with a different answer changes the label as
    ``preference_revise`` does, or raises ``LabelEditRefused`` saying why it
    may not. A submit after the lease expired is accepted while the pair
    still has a free slot; otherwise it raises ``ComparisonFull``. A lease is
    answered whatever its campaign's status: a pair leased while the
    campaign was active and submitted after an admin paused or archived it is
    recorded (nothing an annotator submitted is lost), while
    ``comparison_lease_next`` serves no new pair. Locks the Comparison row.
    """
    lease = (
        Lease.objects.filter(pk=lease_id, annotator=annotator)
        .select_related("campaign")
        .first()
    )
    if lease is None:
        raise LeaseNotFound("That pair is not assigned to you.")
    completion_choice = _to_completion_choice(choice, a_on_left=lease.a_on_left)
    _check_strength_agrees(choice, strength)
    stored_strength = _to_completion_strength(strength, a_on_left=lease.a_on_left)
    stored_criteria = {}
    for name, value in (criteria or {}).items():
        if name not in {c.get("name") for c in lease.campaign.criteria}:
            raise LabelingError(f"criteria: unknown criterion {name!r}.")
        stored_criteria[name] = _to_completion_choice(value, a_on_left=lease.a_on_left)

    comparison = Comparison.objects.select_for_update().get(pk=lease.comparison_id)
    existing = Preference.objects.filter(
        comparison=comparison, annotator=annotator
    ).first()
    if existing is not None:
        if revise and (
            existing.choice,
            existing.strength,
            existing.criteria,
            existing.rationale,
        ) != (completion_choice, stored_strength, stored_criteria, rationale.strip()):
            revised = _revise(
                preference_id=existing.pk,
                annotator=annotator,
                choice=completion_choice,
                strength=stored_strength,
                criteria=stored_criteria,
                rationale=rationale.strip(),
            )
            return RecordResult(preference=revised, created=False, revised=True)
        return RecordResult(preference=existing, created=False)

    now = timezone.now()
    lease_live = lease.status == Lease.Status.ACTIVE and lease.expires_at > now
    other_live = _live_expiries(comparison, now=now, without=lease.expires_at)
    # Blind-review votes and gold answers are extra evidence on top of the k labels.
    if source == Preference.Source.ANNOTATOR and not comparison.is_gold:
        if (
            not lease_live
            and comparison.label_count + len(other_live) >= lease.campaign.overlap_k
        ):
            raise ComparisonFull(
                "This pair already has all the labels it needs. Here is the next one."
            )
        if comparison.status != Comparison.Status.OPEN:
            raise ComparisonFull("This pair is closed. Here is the next one.")

    preference = Preference(
        comparison=comparison,
        annotator=annotator,
        lease=lease,
        choice=completion_choice,
        a_on_left=lease.a_on_left,
        strength=stored_strength,
        criteria=stored_criteria,
        rationale=rationale.strip(),
        time_spent_ms=time_spent_ms,
        client_request_id=client_request_id,
        source=source,
    )
    # Field validation only: the unique and check constraints are enforced by
    # PostgreSQL, and the row lock above already makes a duplicate impossible.
    preference.full_clean(
        exclude=["comparison", "annotator", "lease"], validate_constraints=False
    )
    preference.save()

    comparison.label_count += 1
    comparison.lease_expiries = other_live
    comparison.done_by = [*comparison.done_by, annotator.pk]
    if (
        comparison.label_count >= lease.campaign.overlap_k
        and comparison.status == Comparison.Status.OPEN
        and not comparison.is_gold
    ):
        comparison.status = Comparison.Status.COMPLETE
    comparison.save(
        update_fields=[
            "label_count",
            "lease_expiries",
            "done_by",
            "status",
            "updated_at",
        ]
    )
    lease.status = Lease.Status.SUBMITTED
    lease.save(update_fields=["status", "updated_at"])
    reports_mark_stale(campaign_id=comparison.campaign_id)
    logger.info(
        "labeling.preference.recorded comparison=%s annotator=%s",
        comparison.pk,
        annotator.pk,
    )
    return RecordResult(preference=preference, created=True)


_KEEP: Any = object()


def _revise(
    *,
    preference_id: int,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int | None,
    criteria: dict[str, str],
    rationale: str,
) -> Preference:
    """Make (choice, strength, criteria, rationale), already stored against
    the completions, the new version of the preference. Call inside
    ``atomic()``; locks the Campaign row (no-key, so labeling goes on) to
    serialise with snapshot creation, then the Preference row."""
    campaign_id = (
        Preference.objects.filter(pk=preference_id, annotator=annotator)
        .values_list("comparison__campaign_id", flat=True)
        .first()
    )
    if campaign_id is None:
        raise LabelNotFound("That label is not yours or does not exist.")
    campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign_id)
    preference = Preference.objects.select_for_update().get(pk=preference_id)
    if campaign.status != Campaign.Status.ACTIVE:
        raise LabelEditRefused(
            "This campaign is not accepting labels right now, so labels cannot "
            "be changed."
        )
    refusal = preference_edit_refusal(preference=preference, campaign=campaign)
    if refusal is not None:
        raise LabelEditRefused(refusal)
    PreferenceRevision.objects.create(
        preference=preference,
        version=preference.version,
        choice=preference.choice,
        a_on_left=preference.a_on_left,
        strength=preference.strength,
        criteria=preference.criteria,
        rationale=preference.rationale,
        answered_at=preference.revised_at or preference.created_at,
    )
    preference.choice = choice
    preference.strength = strength
    preference.criteria = criteria
    preference.rationale = rationale
    preference.version += 1
    preference.revised_at = timezone.now()
    preference.full_clean(
        exclude=["comparison", "annotator", "lease"], validate_constraints=False
    )
    preference.save(
        update_fields=[
            "choice",
            "strength",
            "criteria",
            "rationale",
            "version",
            "revised_at",
            "updated_at",
        ]
    )
    reports_mark_stale(campaign_id=campaign.pk)
    logger.info(
        "labeling.preference.revised preference=%s version=%s",
        preference.pk,
        preference.version,
    )
    return preference


@transaction.atomic
def preference_revise(
    *,
    preference_id: int,
    annotator: AbstractBaseUser,
    choice: str | None = None,
    strength: Any = _KEEP,
    criteria: dict[str, str] | None = None,
    rationale: str | None = None,
) -> Preference:
    """Change ``annotator``'s own label ``preference_id``: the current values
    are kept as a PreferenceRevision and the Preference row becomes the next
    version (exports and snapshots read it).

    Values are in the screen sides the annotator saw; one left out keeps
    its current value (pass ``strength=None`` to clear it). Raises
    ``LabelNotFound`` for a label that is not theirs, ``LabelingError`` for a
    contradicting strength, and ``LabelEditRefused`` after the campaign's
    ``label_edit_minutes``, once the label is in a training snapshot, or
    for a label not given while labeling.
    """
    preference = Preference.objects.filter(
        pk=preference_id, annotator=annotator
    ).first()
    if preference is None:
        raise LabelNotFound("That label is not yours or does not exist.")
    campaign = campaign_get_for_annotator(
        user=annotator, campaign_id=preference.comparison.campaign_id
    )
    # Say first that the label is final, before judging the new values
    # (checked again under the locks in _revise).
    refusal = preference_edit_refusal(preference=preference, campaign=campaign)
    if refusal is not None:
        raise LabelEditRefused(refusal)
    current = preference_screen_answer(preference=preference)
    new_choice = current["choice"] if choice is None else choice
    new_strength = current["strength"] if strength is _KEEP else strength
    a_on_left = preference.a_on_left
    stored_choice = _to_completion_choice(new_choice, a_on_left=a_on_left)
    _check_strength_agrees(new_choice, new_strength)
    stored_strength = _to_completion_strength(new_strength, a_on_left=a_on_left)
    if criteria is None:
        stored_criteria = dict(preference.criteria)
    else:
        known = {c.get("name") for c in campaign.criteria}
        stored_criteria = {}
        for name, value in criteria.items():
            if name not in known:
                raise LabelingError(f"criteria: unknown criterion {name!r}.")
            stored_criteria[name] = _to_completion_choice(value, a_on_left=a_on_left)
    return _revise(
        preference_id=preference.pk,
        annotator=annotator,
        choice=stored_choice,
        strength=stored_strength,
        criteria=stored_criteria,
        rationale=preference.rationale if rationale is None else rationale.strip(),
    )


@transaction.atomic
def lease_skip(*, lease_id: int, annotator: AbstractBaseUser) -> None:
    """Give the pair back and never offer it to this annotator again."""
    lease = Lease.objects.filter(pk=lease_id, annotator=annotator).first()
    if lease is None:
        raise LeaseNotFound("That pair is not assigned to you.")
    if lease.status != Lease.Status.ACTIVE:
        return
    comparison = Comparison.objects.select_for_update().get(pk=lease.comparison_id)
    now = timezone.now()
    comparison.lease_expiries = _live_expiries(
        comparison, now=now, without=lease.expires_at
    )
    if annotator.pk not in comparison.done_by:
        comparison.done_by = [*comparison.done_by, annotator.pk]
    comparison.save(update_fields=["lease_expiries", "done_by", "updated_at"])
    lease.status = Lease.Status.SKIPPED
    lease.save(update_fields=["status", "updated_at"])


def lease_release_expired(*, batch_size: int = 5000) -> int:
    """Housekeeping only: mark expired leases and prune stale expiry times.

    Correctness never depends on it (the queue ignores expired entries).
    """
    now = timezone.now()
    expired = Lease.objects.filter(status=Lease.Status.ACTIVE, expires_at__lte=now)
    count = 0
    with transaction.atomic():
        ids = list(expired.values_list("pk", flat=True)[:batch_size])
        count = Lease.objects.filter(pk__in=ids).update(
            status=Lease.Status.EXPIRED, updated_at=now
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE labeling_comparison c
            SET lease_expiries = ARRAY(SELECT e FROM unnest(c.lease_expiries) AS e WHERE e > %s)
            WHERE c.id IN (
                SELECT id FROM labeling_comparison
                WHERE status = 'open' AND lease_expiries <> '{}'
                  AND EXISTS (SELECT 1 FROM unnest(lease_expiries) AS e WHERE e <= %s)
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            """,
            [now, now, batch_size],
        )
    return count
