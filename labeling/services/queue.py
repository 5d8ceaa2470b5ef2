"""The labeling queue: leases and preferences.

``comparison_lease_next`` hands an annotator the next pair in one SQL
statement (``FOR UPDATE SKIP LOCKED`` over an index that matches the filter),
and ``preference_record`` stores a label idempotently. Live leases are the
non-expired entries of ``Comparison.lease_expiries``: an expired lease frees
its slot by the clock alone, with no sweeper needed for correctness.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from core import roles
from core.enqueue import enqueue
from core.reports import (
    REFRESH_COUNTDOWN_S,
    REFRESH_TASK,
    REQUEST_RETRY_AFTER,
    reports_mark_stale,
)
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
    Completion,
    Lease,
    Preference,
    PreferenceRevision,
    Prompt,
)
from labeling.selectors import (
    CARD_FOOTER_COLUMNS,
    CARD_FOOTER_SQL,
    BlindPair,
    CardFooter,
    blind_pair_of,
    campaign_get_for_annotator,
    card_footer_from_row,
    card_footer_params,
    preference_edit_refusal,
    preference_screen_answer,
)

logger = logging.getLogger(__name__)


# Defined beside the one service that raises them (labeling.exceptions
# belongs to the campaign and quality services' owners in this change).
SCREEN_CHOICES = ("left", "right", "tie", "both_bad")

# One statement after the annotator's advisory lock: return the annotator's
# live lease in this campaign (two tabs, a double click) or else pick the best
# open pair they may take, lock it (skipping pairs another transaction holds),
# reserve a slot on it and insert the Lease; then read what the annotator sees
# of that pair. The conditions of the pick read only the comparison row's own
# columns, so a pair that another annotator reserved between our snapshot and
# our lock is re-checked by PostgreSQL against its new version and skipped
# when it became full. A gold pair (``want_gold``) has no k: nothing on its row
# needs reserving, so it is only locked. ``exclude_lease`` and
# ``exclude_comparison`` are the lease and pair of the label written just
# before (or, in ``_record_and_lease_next_sql``, by the same statement, whose
# snapshot does not see its own writes: that lease still reads as active and
# that pair as not done by the annotator). Split in two so the labeling
# statement can carry the CTEs and read the pair as a subquery.
_LEASE_NEXT_CTES = """
live AS (
    SELECT l.id, l.comparison_id, l.a_on_left, l.expires_at, l."order"
    FROM labeling_lease l
    JOIN labeling_comparison lc ON lc.id = l.comparison_id AND lc.status = 'open'
    WHERE l.annotator_id = %(annotator_id)s
      AND l.campaign_id = %(campaign_id)s
      AND l.status = 'active'
      AND l.expires_at > %(now)s
      AND l.id <> %(exclude_lease)s
    ORDER BY l.expires_at DESC
    LIMIT 1
), gold AS (
    SELECT c.id
    FROM labeling_comparison c
    WHERE %(want_gold)s
      AND NOT EXISTS (SELECT 1 FROM live)
      AND c.campaign_id = %(campaign_id)s
      AND c.status = 'open'
      AND c.is_gold
      AND NOT (c.done_by @> ARRAY[%(annotator_id)s]::bigint[])
      AND c.id <> %(exclude_comparison)s
    ORDER BY c.id
    LIMIT 1
    FOR UPDATE OF c SKIP LOCKED
), picked AS (
    SELECT c.id
    FROM labeling_comparison c
    WHERE NOT EXISTS (SELECT 1 FROM live)
      AND NOT EXISTS (SELECT 1 FROM gold)
      AND c.campaign_id = %(campaign_id)s
      AND c.status = 'open'
      AND NOT c.is_gold
      AND NOT (c.done_by @> ARRAY[%(annotator_id)s]::bigint[])
      AND c.id <> %(exclude_comparison)s
      AND c.label_count
          + (SELECT count(*) FROM unnest(c.lease_expiries) AS e WHERE e > %(now)s)
          < %(k)s
    ORDER BY (c.priority + c.priority_boost) DESC, c.id
    LIMIT 1
    FOR UPDATE OF c {lock_mode}
), reserved AS (
    UPDATE labeling_comparison c
    SET lease_expiries = ARRAY(
            SELECT e FROM unnest(c.lease_expiries) AS e WHERE e > %(now)s
        ) || %(expires_at)s::timestamptz,
        updated_at = %(now)s
    FROM picked
    WHERE c.id = picked.id
    RETURNING c.id
), created AS (
    INSERT INTO labeling_lease (
        created_at, updated_at, campaign_id, comparison_id, annotator_id,
        a_on_left, "order", expires_at, status
    )
    SELECT %(now)s, %(now)s, %(campaign_id)s, n.id, %(annotator_id)s,
           %(a_on_left)s,
           -- A ranked comparison's completions, shuffled per lease; NULL
           -- for a pair (it has no items).
           NULLIF(ARRAY(
               SELECT i.completion_id FROM labeling_comparisonitem i
               WHERE i.comparison_id = n.id ORDER BY random()
           ), '{{}}'),
           %(expires_at)s, 'active'
    FROM (SELECT id FROM gold UNION ALL SELECT id FROM reserved) n
    RETURNING id, comparison_id, a_on_left, expires_at, "order"
), chosen AS (
    SELECT * FROM live
    UNION ALL
    SELECT * FROM created
)
"""
_LEASE_NEXT_SELECT = """
SELECT chosen.id, chosen.comparison_id, chosen.a_on_left, chosen.expires_at,
       chosen."order", p.text, p.messages, ca.text, cb.text, ca.generation, cb.generation,
       ca.html, cb.html,
       -- A ranked comparison's completions in the order shown (NULL for a pair).
       (SELECT json_agg(json_build_array(co.id, co.text, co.html, co.generation)
                        ORDER BY u.ord)
        FROM unnest(chosen."order") WITH ORDINALITY AS u(cid, ord)
        JOIN labeling_completion co ON co.id = u.cid)
FROM chosen
JOIN labeling_comparison c ON c.id = chosen.comparison_id
JOIN labeling_prompt p ON p.id = c.prompt_id
JOIN labeling_completion ca ON ca.id = c.completion_a_id
JOIN labeling_completion cb ON cb.id = c.completion_b_id
"""
_LEASE_NEXT_SQL = "\nWITH " + _LEASE_NEXT_CTES + _LEASE_NEXT_SELECT

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


@dataclass(frozen=True)
class LeasedPair:
    """A lease and what its annotator sees of the pair, from one statement."""

    lease: Lease
    pair: BlindPair
    # A ranked comparison's completions in the order shown, as
    # [id, text, html, generation] (labeling.selectors.ranking reads them);
    # None for a pair.
    ranked_items: list[list[Any]] | None = None


@transaction.atomic
def comparison_lease_next(*, campaign: Campaign, annotator: AbstractBaseUser) -> Lease:
    """Lease the next pair of ``campaign`` to ``annotator``; see
    ``comparison_lease_next_pair``, which also returns the pair's texts."""
    return comparison_lease_next_pair(campaign=campaign, annotator=annotator).lease


@transaction.atomic
def comparison_lease_next_pair(
    *, campaign: Campaign, annotator: AbstractBaseUser
) -> LeasedPair:
    """Lease the next pair of ``campaign`` to ``annotator``.

    Returns the annotator's live lease in this campaign when there is one
    (two tabs show the same pair); otherwise reserves a new pair. The caller
    has checked that the annotator may label in ``campaign``.
    Raises ``NothingToLabel`` when the queue has nothing for this annotator,
    and ``CampaignNotAvailable`` when ``campaign`` is paused or archived: no
    pair is handed out then, not even a live lease leased before the pause
    (a submit for that lease is still accepted, see ``preference_record``).
    Two statements: the annotator's advisory lock, then the lease.
    """
    if campaign.status != Campaign.Status.ACTIVE:
        raise CampaignNotAvailable("This campaign is not accepting labels right now.")
    with connection.cursor() as cursor:
        # Serialises one annotator's own requests (double clicks, two tabs);
        # different annotators never wait on each other here.
        cursor.execute(_ANNOTATOR_LOCK_SQL, [annotator.pk])
    return _lease_next_locked(campaign=campaign, annotator=annotator)


# The advisory lock of ``comparison_lease_next_pair``; taken before the
# statement that looks for the annotator's live lease, so that statement's
# snapshot sees a lease another request of theirs just committed.
_ANNOTATOR_LOCK_SQL = "SELECT pg_advisory_xact_lock(7141, %s)"


def _lease_next_locked(
    *,
    campaign: Campaign,
    annotator: AbstractBaseUser,
    exclude_lease: int = 0,
    exclude_comparison: int = 0,
    wait_for_locked: bool = True,
) -> LeasedPair:
    """The lease statement. Call inside ``atomic()`` holding the annotator's
    advisory lock (``_ANNOTATOR_LOCK_SQL``), with ``campaign`` active."""
    params = _lease_next_params(
        campaign=campaign,
        annotator=annotator,
        exclude_lease=exclude_lease,
        exclude_comparison=exclude_comparison,
    )
    with connection.prepared_cursor() as cursor:
        cursor.execute(_LEASE_NEXT_SQL.format(lock_mode="SKIP LOCKED"), params)
        row = cursor.fetchone()
        if row is None and wait_for_locked:
            # Every candidate may have been locked by someone else's
            # in-flight lease. Ask again, this time waiting for those
            # (short) transactions: a pair whose slots they filled is
            # re-checked and passed over, so we never report an empty queue
            # while a free slot is only momentarily locked.
            cursor.execute(
                _LEASE_NEXT_SQL.format(lock_mode=""), {**params, "want_gold": False}
            )
            row = cursor.fetchone()
    if row is None:
        raise NothingToLabel("No pairs are waiting for you in this campaign.")
    return _leased_pair(row, campaign=campaign, annotator=annotator)


def _lease_next_params(
    *,
    campaign: Campaign,
    annotator: AbstractBaseUser,
    exclude_lease: int = 0,
    exclude_comparison: int = 0,
) -> dict[str, Any]:
    """The parameters of the lease CTEs: the campaign's k and lease time, the
    gold draw and the sides' shuffle."""
    now = timezone.now()
    return {
        "campaign_id": campaign.pk,
        "annotator_id": annotator.pk,
        "k": campaign.overlap_k,
        "now": now,
        "expires_at": now + timedelta(seconds=campaign.lease_ttl_seconds),
        "exclude_lease": exclude_lease,
        "exclude_comparison": exclude_comparison,
        "want_gold": campaign.gold_rate > 0 and _rng.random() < campaign.gold_rate,
        "a_on_left": _rng.random() < 0.5,
    }


def _leased_pair(
    row: Sequence[Any], *, campaign: Campaign, annotator: AbstractBaseUser
) -> LeasedPair:
    """The lease and pair from the columns of ``_LEASE_NEXT_SELECT``."""
    (lease_id, comparison_id, a_on_left, lease_expires_at, order, prompt_text,
     prompt_messages, text_a, text_b, generation_a, generation_b, html_a,
     html_b, ranked_items) = row  # fmt: skip
    lease = Lease(
        pk=lease_id,
        campaign=campaign,
        comparison_id=comparison_id,
        annotator=annotator,
        a_on_left=a_on_left,
        order=order,
        expires_at=lease_expires_at,
        status=Lease.Status.ACTIVE,
    )
    lease._state.adding = False
    prompt = Prompt(text=prompt_text, messages=prompt_messages)
    a = Completion(text=text_a, generation=generation_a, html=html_a)
    b = Completion(text=text_b, generation=generation_b, html=html_b)
    return LeasedPair(
        lease=lease,
        pair=blind_pair_of(lease=lease, prompt=prompt, a=a, b=b),
        ranked_items=ranked_items,
    )


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
    ``comparison_lease_next`` serves no new pair. Takes the annotator's
    advisory lock (as ``comparison_lease_next_pair``) and locks the
    Comparison row.
    """
    return _record(
        lease_id=lease_id,
        annotator=annotator,
        answer=dict(
            choice=choice,
            strength=strength,
            criteria=criteria,
            rationale=rationale,
            time_spent_ms=time_spent_ms,
            client_request_id=client_request_id,
            source=source,
        ),
        revise=revise,
    ).result


@dataclass(frozen=True)
class RecordNextResult:
    """A recorded label and what follows it: the next pair, or why none."""

    record: RecordResult
    # The lease's campaign, as read under the pair's lock.
    campaign: Campaign
    next: LeasedPair | None
    # Why no pair follows: "empty" (nothing left for this annotator) or
    # "closed" (the campaign was paused or archived; the label is saved).
    no_next: str = ""
    # With card_footer=True, when the label's statement read it: what the
    # card shows with the next pair (selectors.annotator_card_progress).
    card_footer: CardFooter | None = None


def preference_record_and_lease_next(
    *,
    lease_id: int,
    annotator: AbstractBaseUser,
    revise: bool = False,
    campaign_id: int | None = None,
    card_footer: bool = False,
    **answer: Any,
) -> RecordNextResult:
    """``preference_record`` then ``comparison_lease_next_pair`` in the lease's
    campaign, in one transaction: a label is one round trip. A new label and
    the next lease are one statement after the pair's lock
    (``_record_and_lease_next_sql``). The caller has checked the annotator's
    role; may they still label in the campaign (assigned, or the campaign
    open to all) is checked here, in the statement that locks the pair. A
    label refused (``ComparisonFull`` and the other ``LabelingError``s)
    raises as ``preference_record`` does and leases nothing. With
    ``campaign_id`` (the page's URL), a lease of another campaign raises
    ``LeaseNotFound`` before anything is written. With ``card_footer`` (the
    htmx card), a new label's statement also reads the progress the card
    shows with the next pair (``RecordNextResult.card_footer``)."""
    with transaction.atomic():
        recorded = _record(
            lease_id=lease_id,
            annotator=annotator,
            answer=answer,
            revise=revise,
            lease_next=True,
            campaign_id=campaign_id,
            card_footer=card_footer,
        )
        record, lease, leased = recorded.result, recorded.lease, recorded.next
        campaign = lease.campaign
        if not _may_lease_next(lease, annotator):
            return RecordNextResult(
                record=record, campaign=campaign, next=None, no_next="closed"
            )
        if leased is None and not recorded.next_tried:
            # A submit that wrote nothing (a retry, or a revision).
            try:
                leased = _lease_next_locked(
                    campaign=campaign,
                    annotator=annotator,
                    exclude_lease=lease.pk,
                    exclude_comparison=lease.comparison_id,
                    wait_for_locked=False,
                )
            except NothingToLabel:
                leased = None
    if leased is None:
        # Every candidate was locked (or none is left): ask again in a
        # transaction of its own, which may wait for locked candidates
        # without holding this pair's lock (two such waits could deadlock).
        try:
            leased = comparison_lease_next_pair(campaign=campaign, annotator=annotator)
        except (NothingToLabel, CampaignNotAvailable):
            return RecordNextResult(
                record=record, campaign=campaign, next=None, no_next="empty"
            )
    return RecordNextResult(
        record=record, campaign=campaign, next=leased, card_footer=recorded.footer
    )


def _may_lease_next(lease: Lease, annotator: AbstractBaseUser) -> bool:
    """Whether a submit for ``lease`` (read by ``_lease_for_record``) may
    lease its annotator the next pair: the campaign is active and still open
    to them (reviewers label anywhere)."""
    return lease.campaign.status == Campaign.Status.ACTIVE and (
        lease.may_label or roles.is_reviewer(annotator)
    )


def _insert_preference_sql(preference: Preference) -> tuple[str, list[Any]]:
    """Django's own INSERT of ``preference`` (auto_now fields filled),
    RETURNING its id, to run inside a larger statement."""
    fields = [f for f in Preference._meta.concrete_fields if not f.primary_key]
    query = InsertQuery(Preference)
    query.insert_values(fields, [preference])
    compiler = query.get_compiler(using=connection.alias)
    compiler.returning_fields = [Preference._meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


# What every new label writes besides its own rows, as CTEs of one
# statement: its comparison's counters (the row is locked by the caller), the
# answered lease, and the campaign's reports marked stale exactly as
# core.reports.reports_mark_stale does (a row is updated only when no refresh
# is queued, or the request is older than REQUEST_RETRY_AFTER; the caller
# enqueues the refresh when one was). Its parameters come from
# label_writes_params. Shared with the ranking's statement
# (labeling.services.ranking).
LABEL_WRITES_SQL = """
cmp AS (
    UPDATE labeling_comparison
    SET label_count = %s, lease_expiries = %s, done_by = %s, status = %s,
        updated_at = %s
    WHERE id = %s
),
answered AS (
    UPDATE labeling_lease SET status = %s, updated_at = %s WHERE id = %s
),
stale AS (
    UPDATE core_report
    SET stale = true, refresh_requested_at = %s, updated_at = %s
    WHERE campaign_id = %s
      AND (refresh_requested_at IS NULL OR refresh_requested_at < %s)
    RETURNING 1
)
"""


def label_writes_params(*, comparison: Comparison, lease: Lease, now: Any) -> list[Any]:
    """``LABEL_WRITES_SQL``'s parameters, in order: the comparison's and the
    lease's new values (set by the caller) and the stale mark's."""
    return [
        comparison.label_count,
        comparison.lease_expiries,
        comparison.done_by,
        comparison.status,
        now,
        comparison.pk,
        lease.status,
        now,
        lease.pk,
        now,
        now,
        comparison.campaign_id,
        now - REQUEST_RETRY_AFTER,
    ]


# The writes of a new label, one statement: the preference and
# LABEL_WRITES_SQL.
_RECORD_SQL = "".join(
    (
        "\nWITH pref AS ({insert}),\n",
        LABEL_WRITES_SQL,
        "SELECT (SELECT id FROM pref), (SELECT count(*) FROM stale)\n",
    )
)


def _record_and_lease_next_sql(*, card_footer: bool) -> str:
    """The writes of a new label and the next lease (``_LEASE_NEXT_CTES``,
    never waiting for a locked pair), one statement: a label through
    ``?next=1`` is BEGIN, the pair's lock, this, COMMIT. The next pair's
    columns are NULL when none was leased. With ``card_footer``, the columns
    of the progress the htmx card shows with the next pair
    (``selectors.CARD_FOOTER_SQL``) come before them, so a label through the
    page is the same four statements. Its parameters are LABEL_WRITES_SQL's,
    then the named ones in the order they occur."""
    return "".join(
        (
            "\nWITH pref AS ({insert}),\n",
            LABEL_WRITES_SQL,
            ",\n",
            # Its "{{}}" stays escaped for the .format(insert=...) of each label.
            _LEASE_NEXT_CTES.replace("{lock_mode}", "SKIP LOCKED"),
            ",\nnext_pair AS (",
            _LEASE_NEXT_SELECT,
            ")\n",
            "SELECT (SELECT id FROM pref), (SELECT count(*) FROM stale), ",
            "footer.*, " if card_footer else "",
            "next_pair.*\n",
            "FROM (SELECT 1) AS one LEFT JOIN next_pair ON true\n",
            f"CROSS JOIN ({CARD_FOOTER_SQL}) AS footer\n" if card_footer else "",
        )
    )


_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")


def _positional(sql: str) -> tuple[str, list[str]]:
    """``sql`` with its named parameters made positional, and their names in
    the order they occur."""
    return _NAMED_PARAMETER.sub("%s", sql), _NAMED_PARAMETER.findall(sql)


# _record_and_lease_next_sql without and with the card's footer.
_RECORD_AND_LEASE_NEXT = {
    card_footer: _positional(_record_and_lease_next_sql(card_footer=card_footer))
    for card_footer in (False, True)
}


_READ_MODELS = ((Lease, "l"), (Campaign, "ca"), (Comparison, "c"))


@functools.cache
def _lease_for_record_sql() -> str:
    """The read of ``_lease_for_record``, built once (from the models'
    columns) instead of compiling an ORM query on every label."""
    columns = ", ".join(
        f'{alias}."{field.column}"'
        for model, alias in _READ_MODELS
        for field in model._meta.concrete_fields
    )
    assigned = Campaign.annotators.through._meta.db_table
    return f"""
        SELECT {columns},
               pg_advisory_xact_lock(7141, %(annotator)s)::text,
               (NOT EXISTS (SELECT 1 FROM {assigned} m WHERE m.campaign_id = l.campaign_id)
                OR EXISTS (SELECT 1 FROM {assigned} m
                           WHERE m.campaign_id = l.campaign_id
                             AND m.user_id = %(annotator)s))
        FROM labeling_lease l
        JOIN labeling_campaign ca ON ca.id = l.campaign_id
        JOIN labeling_comparison c ON c.id = l.comparison_id
        WHERE l.id = %(lease)s AND l.annotator_id = %(annotator)s
        FOR UPDATE OF c
    """  # noqa: S608 - identifiers from the models' metadata only


def _lease_for_record(*, lease_id: int, annotator: AbstractBaseUser) -> Lease | None:
    """One statement: the annotator's advisory lock (so a next pair leased
    in this transaction sees their other requests), the lease with its
    campaign and its pair, the pair's row locked (read at its latest
    version), and whether the annotator may still label in the campaign
    (``may_label``; as ``campaign_list_for_user``, no one assigned means
    everyone). The lock function runs below the row lock, so the advisory
    lock always comes first, as in ``comparison_lease_next_pair``. Call
    inside ``atomic()``."""
    with connection.prepared_cursor() as cursor:
        cursor.execute(
            _lease_for_record_sql(), {"lease": lease_id, "annotator": annotator.pk}
        )
        row = cursor.fetchone()
    if row is None:
        return None
    instances = []
    at = 0
    for model, _alias in _READ_MODELS:
        fields = model._meta.concrete_fields
        names = [f.attname for f in fields]
        values = [
            f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") else v
            for f, v in zip(fields, row[at : at + len(fields)], strict=True)
        ]
        instances.append(model.from_db(connection.alias, names, values))
        at += len(fields)
    lease, campaign, comparison = instances
    lease.campaign = campaign
    lease.comparison = comparison
    lease.may_label = row[-1]
    return lease


@dataclass(frozen=True)
class _Recorded:
    result: RecordResult
    # Its ``campaign`` and ``comparison`` loaded, and ``may_label``: whether
    # the annotator may still label in the campaign.
    lease: Lease
    # With ``lease_next``: the pair leased by the label's own statement, and
    # whether that statement tried (a submit that writes nothing does not).
    next: LeasedPair | None = None
    next_tried: bool = False
    # With ``card_footer``: the card's progress, read by the label's statement.
    footer: CardFooter | None = None


def _record(
    *,
    lease_id: int,
    annotator: AbstractBaseUser,
    answer: dict[str, Any],
    revise: bool,
    lease_next: bool = False,
    campaign_id: int | None = None,
    card_footer: bool = False,
) -> _Recorded:
    """``preference_record``'s work. Call inside ``atomic()``. With
    ``lease_next``, a new label's statement also leases the annotator's next
    pair when ``_may_lease_next``, and with ``card_footer`` reads the card's
    footer too."""
    choice: str = answer["choice"]
    strength: int | None = answer.get("strength")
    criteria: dict[str, str] | None = answer.get("criteria")
    rationale: str = answer.get("rationale") or ""
    source: str = answer.get("source") or Preference.Source.ANNOTATOR
    lease = _lease_for_record(lease_id=lease_id, annotator=annotator)
    if lease is None or campaign_id not in (None, lease.campaign_id):
        raise LeaseNotFound("That pair is not assigned to you.")
    if lease.comparison.is_ranked:
        raise LabelingError(
            "This lease is for a ranking: submit an order of its completions "
            "(labeling.services.ranking), not a choice between two."
        )
    completion_choice = _to_completion_choice(choice, a_on_left=lease.a_on_left)
    _check_strength_agrees(choice, strength)
    stored_strength = _to_completion_strength(strength, a_on_left=lease.a_on_left)
    stored_criteria = {}
    for name, value in (criteria or {}).items():
        if name not in {c.get("name") for c in lease.campaign.criteria}:
            raise LabelingError(f"criteria: unknown criterion {name!r}.")
        stored_criteria[name] = _to_completion_choice(value, a_on_left=lease.a_on_left)

    comparison = lease.comparison
    # done_by is read from the locked row's latest version: it holds whoever
    # labeled (or skipped) the pair, so a label is looked up only then.
    existing = None
    if annotator.pk in comparison.done_by:
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
            result = RecordResult(preference=revised, created=False, revised=True)
        else:
            result = RecordResult(preference=existing, created=False)
        return _Recorded(result=result, lease=lease)

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
        time_spent_ms=answer.get("time_spent_ms"),
        client_request_id=answer.get("client_request_id") or "",
        source=source,
    )
    # Field validation only: the unique and check constraints are enforced by
    # PostgreSQL, and the row lock above already makes a duplicate impossible.
    preference.full_clean(
        exclude=["comparison", "annotator", "lease"], validate_constraints=False
    )

    comparison.label_count += 1
    comparison.lease_expiries = other_live
    comparison.done_by = [*comparison.done_by, annotator.pk]
    if (
        comparison.label_count >= lease.campaign.overlap_k
        and comparison.status == Comparison.Status.OPEN
        and not comparison.is_gold
    ):
        comparison.status = Comparison.Status.COMPLETE
    comparison.updated_at = now
    lease.status = Lease.Status.SUBMITTED
    lease.updated_at = now
    insert_sql, insert_params = _insert_preference_sql(preference)
    params = [
        *insert_params,
        *label_writes_params(comparison=comparison, lease=lease, now=now),
    ]
    next_tried = lease_next and _may_lease_next(lease, annotator)
    leased = footer_row = None
    with connection.prepared_cursor() as cursor:
        if next_tried:
            named = _lease_next_params(
                campaign=lease.campaign,
                annotator=annotator,
                exclude_lease=lease.pk,
                exclude_comparison=comparison.pk,
            )
            sql, names = _RECORD_AND_LEASE_NEXT[card_footer]
            if card_footer:
                named |= card_footer_params(
                    campaign=lease.campaign, annotator=annotator, labeled=comparison.pk
                )
            cursor.execute(
                sql.format(insert=insert_sql),
                [*params, *(named[name] for name in names)],
            )
            row = cursor.fetchone()
            at = 2
            if card_footer:
                at += CARD_FOOTER_COLUMNS
                footer_row = row[2:at]
            if row[at] is not None:
                leased = _leased_pair(
                    row[at:], campaign=lease.campaign, annotator=annotator
                )
        else:
            cursor.execute(_RECORD_SQL.format(insert=insert_sql), params)
            row = cursor.fetchone()
    preference.pk, reports_queued = row[:2]
    preference._state.adding = False
    if reports_queued:
        enqueue(REFRESH_TASK, comparison.campaign_id, countdown=REFRESH_COUNTDOWN_S)
    logger.info(
        "labeling.preference.recorded comparison=%s annotator=%s",
        comparison.pk,
        annotator.pk,
    )
    return _Recorded(
        result=RecordResult(preference=preference, created=True),
        lease=lease,
        next=leased,
        next_tried=next_tried,
        footer=card_footer_from_row(footer_row, labeled=True)
        if footer_row is not None
        else None,
    )


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
