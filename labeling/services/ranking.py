"""Ranked comparisons (campaign mode "rank"): K = 3 to 9 completions of one
prompt, put in order by an annotator.

Interface (other helpers build on these; signatures are stable):

``ranked_comparison_create(*, campaign, prompt, completions, priority=0,
gold_ranks=None) -> Comparison``
    One ranked comparison of ``completions`` (3..9 distinct completions of
    ``prompt``, canonical order), its ComparisonItem rows, and its implied
    pairs (one Comparison per pair of completions, status "implied",
    ``parent`` = the ranked comparison; they never enter the queue). The
    ranked comparison is the queue unit: leasing, k and idempotency are the
    pair queue's, unchanged. ``gold_ranks`` (aligned with ``completions``)
    makes it a gold comparison.

Leasing: ``labeling.services.queue.comparison_lease_next_pair`` (and
``comparison_lease_next``) lease a ranked comparison like a pair; the lease
statement stores the completions in a per-lease shuffled order in
``Lease.order`` (completion ids, left to right / top to bottom). Read what to
show with ``labeling.selectors.ranking.ranking_card(lease=...)`` (one query),
or without a query from the lease statement's own rows
(``LeasedPair.ranked_items``, via ``ranking_card_of``).
``ranking_lease_next(*, campaign, annotator) -> LeasedRanking`` does both.

``ranking_record(*, lease, user, ranks, none_acceptable=False, reason="",
client_request_id="", time_spent_ms=None) -> Ranking``
    Store ``user``'s ranking for ``lease`` (theirs). ``ranks`` is aligned
    with the lease's display order (``Lease.order`` / ``RankingCard.items``):
    one int per shown completion, 1 = best, equal ranks are ties, each in
    1..K. ``none_acceptable`` flags that no completion is acceptable
    (``reason`` says why, optional, at most 1000 characters); such a ranking
    is stored with its implied preferences, which training snapshots leave
    out by default. Creates the K*(K-1)/2 implied Preference rows (source
    "ranking", ``ranking`` set): for a pair (a, b), choice "a" when a is
    ranked better (lower), "b" when b is, "tie" when equal. Idempotent: a
    second submit for the same comparison returns the first ranking
    (``ranking_submit`` says whether it was created). Raises as
    ``preference_record`` does: ``LeaseNotFound`` (not their lease),
    ``ComparisonFull`` (lease expired and the k slots are taken, or the
    comparison closed), ``LabelingError`` (invalid ranks or a pair lease).

``ranking_submit(*, lease_id, annotator, ranks, ...) -> RankingResult``
    The same by lease id, with ``created``.
``ranking_record_and_lease_next(*, lease_id, annotator, **answer) ->
RankingNextResult``
    Record, then lease the next comparison of the campaign, in one
    transaction (as ``preference_record_and_lease_next``).
``ranked_gold_set(*, comparison, ranks) -> Comparison``
    Make a ranked comparison gold with ``ranks`` (aligned with its items'
    canonical positions), or not gold with ``ranks=None``; its implied pairs
    get the matching gold choices.

Readers: the implied preferences are ordinary Preference rows, so the
pairwise export, snapshots, the leaderboard and the promotion gate read them
as they read any label; ``labeling.selectors.ranking.ranking_export_rows``
is the listwise export; ``labeling.selectors.quality.ranking_quality`` has
gold (Kendall's tau) and agreement (ordinal alpha, Kendall's W).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
    reports_mark_stale,
)
from labeling.exceptions import (
    CampaignNotAvailable,
    ComparisonFull,
    LabelingError,
    LeaseNotFound,
    NothingToLabel,
)
from labeling.models import (
    Campaign,
    Comparison,
    ComparisonItem,
    Completion,
    Lease,
    Preference,
    Prompt,
    Ranking,
)
from labeling.selectors.ranking import RankingCard, ranking_card, ranking_card_of
from labeling.services import queue

logger = logging.getLogger(__name__)

MIN_ITEMS = 3
MAX_ITEMS = 9
REASON_MAX = 1000


def implied_choice(rank_a: int, rank_b: int) -> str:
    """The pairwise choice a ranking implies for (a, b): lower rank is better."""
    if rank_a < rank_b:
        return Preference.Choice.A
    if rank_b < rank_a:
        return Preference.Choice.B
    return Preference.Choice.TIE


def _check_items(completions: Sequence[Completion], *, prompt: Prompt) -> None:
    if not MIN_ITEMS <= len(completions) <= MAX_ITEMS:
        raise LabelingError(
            f"A ranking needs {MIN_ITEMS} to {MAX_ITEMS} completions, "
            f"not {len(completions)}."
        )
    if len({c.pk for c in completions}) != len(completions):
        raise LabelingError("The completions of a ranking must be distinct.")
    if any(c.prompt_id != prompt.pk for c in completions):
        raise LabelingError("Every completion must answer the ranking's prompt.")


def _check_ranks(ranks: Sequence[Any], *, k: int, field: str = "ranks") -> list[int]:
    if not isinstance(ranks, list | tuple) or len(ranks) != k:
        raise LabelingError(
            f"{field}: give one rank per completion ({k}).", extra={"field": field}
        )
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        raise LabelingError(f"{field}: ranks are integers.", extra={"field": field})
    if any(not 1 <= r <= k for r in ranks):
        raise LabelingError(
            f"{field}: each rank is between 1 (best) and {k}.", extra={"field": field}
        )
    return [int(r) for r in ranks]


def _gold_choice(ranks: dict[int, int] | None, a: int, b: int) -> str:
    return "" if ranks is None else implied_choice(ranks[a], ranks[b])


def ranked_comparisons_bulk_create(
    *,
    campaign: Campaign,
    rows: Sequence[tuple[Prompt, Sequence[Completion], int]],
) -> list[Comparison]:
    """``ranked_comparison_create`` for many (prompt, completions, priority)
    rows at once (imports): four bulk inserts. Call inside ``atomic()``;
    the completions are saved and checked by the caller."""
    ranked = [
        Comparison(
            campaign=campaign,
            prompt=prompt,
            completion_a=completions[0],
            completion_b=completions[1],
            priority=priority,
            is_ranked=True,
        )
        for prompt, completions, priority in rows
    ]
    Comparison.objects.bulk_create(ranked, batch_size=2000)
    items: list[ComparisonItem] = []
    implied: list[Comparison] = []
    for comparison, (prompt, completions, _priority) in zip(ranked, rows, strict=True):
        items.extend(
            ComparisonItem(comparison=comparison, completion=c, position=i)
            for i, c in enumerate(completions)
        )
        implied.extend(
            Comparison(
                campaign=campaign,
                prompt=prompt,
                completion_a=a,
                completion_b=b,
                status=Comparison.Status.IMPLIED,
                parent=comparison,
            )
            for a, b in itertools.combinations(completions, 2)
        )
    ComparisonItem.objects.bulk_create(items, batch_size=2000)
    Comparison.objects.bulk_create(implied, batch_size=2000)
    return ranked


@transaction.atomic
def ranked_comparison_create(
    *,
    campaign: Campaign,
    prompt: Prompt,
    completions: Sequence[Completion],
    priority: int = 0,
    gold_ranks: Sequence[int] | None = None,
) -> Comparison:
    """One ranked comparison of ``completions`` (see the module docstring)."""
    _check_items(completions, prompt=prompt)
    if prompt.campaign_id != campaign.pk:
        raise LabelingError("The prompt belongs to another campaign.")
    [comparison] = ranked_comparisons_bulk_create(
        campaign=campaign, rows=[(prompt, list(completions), priority)]
    )
    if gold_ranks is not None:
        comparison = ranked_gold_set(comparison=comparison, ranks=gold_ranks)
    return comparison


@transaction.atomic
def ranked_gold_set(
    *, comparison: Comparison, ranks: Sequence[int] | None
) -> Comparison:
    """Make ``comparison`` (ranked) gold with ``ranks`` aligned with its
    items' canonical positions (1 = best), or not gold (``ranks=None``). Its
    implied pairs carry the matching gold choice, so pair gold checks see
    them too. Locks the comparison row."""
    comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
    if not comparison.is_ranked:
        raise LabelingError("This comparison is a pair, not a ranking.")
    items = list(comparison.items.order_by("position"))
    if ranks is not None:
        ranks = _check_ranks(list(ranks), k=len(items))
    for i, item in enumerate(items):
        item.gold_rank = None if ranks is None else ranks[i]
    ComparisonItem.objects.bulk_update(items, ["gold_rank", "updated_at"])
    by_completion = (
        None
        if ranks is None
        else {item.completion_id: item.gold_rank for item in items}
    )
    pairs = list(_implied_pairs(comparison))
    for pair in pairs:
        pair.is_gold = ranks is not None
        pair.gold_choice = _gold_choice(
            by_completion, pair.completion_a_id, pair.completion_b_id
        )
    Comparison.objects.bulk_update(pairs, ["is_gold", "gold_choice", "updated_at"])
    comparison.is_gold = ranks is not None
    comparison.gold_choice = "rank" if ranks is not None else ""
    if comparison.is_gold and comparison.status == Comparison.Status.COMPLETE:
        comparison.status = Comparison.Status.OPEN  # gold stays servable
    comparison.save(update_fields=["is_gold", "gold_choice", "status", "updated_at"])
    reports_mark_stale(campaign_id=comparison.campaign_id)  # gold scores move
    return comparison


def _implied_pairs(comparison: Comparison, *, k: int | None = None) -> list[Comparison]:
    """The implied pairs of ranked ``comparison`` (``k`` items, when the
    caller knows), created when missing (a comparison made without
    ``ranked_comparison_create``)."""
    pairs = list(
        Comparison.objects.filter(parent=comparison).only(
            "pk", "completion_a_id", "completion_b_id", "is_gold", "gold_choice"
        )
    )
    if k is not None and len(pairs) == k * (k - 1) // 2:
        return pairs
    items = list(
        comparison.items.order_by("position").values_list("completion_id", flat=True)
    )
    if len(pairs) == len(items) * (len(items) - 1) // 2:
        return pairs
    have = {(p.completion_a_id, p.completion_b_id) for p in pairs}
    Comparison.objects.bulk_create(
        [
            Comparison(
                campaign_id=comparison.campaign_id,
                prompt_id=comparison.prompt_id,
                completion_a_id=a,
                completion_b_id=b,
                status=Comparison.Status.IMPLIED,
                parent=comparison,
                is_gold=comparison.is_gold,
            )
            for a, b in itertools.combinations(items, 2)
            if (a, b) not in have
        ]
    )
    return list(Comparison.objects.filter(parent=comparison))


@dataclass(frozen=True)
class LeasedRanking:
    """A lease of a ranked comparison and what its annotator sees."""

    lease: Lease
    card: RankingCard


def ranking_lease_next(
    *, campaign: Campaign, annotator: AbstractBaseUser
) -> LeasedRanking:
    """Lease the next comparison of rank campaign ``campaign`` (the queue's
    ``comparison_lease_next_pair``: the annotator's live lease when there is
    one) and read its card. Raises as the queue does (``NothingToLabel``,
    ``CampaignNotAvailable``)."""
    leased = queue.comparison_lease_next_pair(campaign=campaign, annotator=annotator)
    return LeasedRanking(lease=leased.lease, card=_card(leased))


def _card(leased: queue.LeasedPair) -> RankingCard:
    """The card of a lease from the queue statement's rows (no query), or
    read for it when the statement had none (a pair lease raises)."""
    if not leased.ranked_items:
        return ranking_card(lease=leased.lease)
    return ranking_card_of(
        lease=leased.lease,
        prompt=leased.pair.prompt,
        is_chat=leased.pair.is_chat,
        items=leased.ranked_items,
    )


@dataclass(frozen=True)
class RankingResult:
    ranking: Ranking
    created: bool


def _insert_sql(obj: Any) -> tuple[str, list[Any]]:
    """Django's own INSERT of ``obj`` (auto_now fields filled), RETURNING its
    id, to run inside a larger statement."""
    model = type(obj)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    query = InsertQuery(model)
    query.insert_values(fields, [obj])
    compiler = query.get_compiler(using=connection.alias)
    compiler.returning_fields = [model._meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


def _implied_insert_sql(*, template: Preference) -> tuple[str, list[Any]]:
    """INSERT ... SELECT of a ranking's implied preferences from the CTEs
    ``r`` (the order shown ``o`` and its ranks ``k``), ``pairs`` and ``rk``
    (the new ranking): every column as on ``template`` except the pair, the
    choice and which of the two was shown first."""
    columns, values, params = [], [], []
    computed = {
        "comparison_id": "p.id",
        "ranking_id": "(SELECT id FROM rk)",
        # Lower rank is better; equal ranks are a tie.
        "choice": "CASE WHEN r.k[array_position(r.o, p.a)] < r.k[array_position(r.o, p.b)]"
        " THEN 'a' WHEN r.k[array_position(r.o, p.b)] < r.k[array_position(r.o, p.a)]"
        " THEN 'b' ELSE 'tie' END",
        "a_on_left": "array_position(r.o, p.a) < array_position(r.o, p.b)",
    }
    for field in Preference._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.attname in computed:
            values.append(computed[field.attname])
        else:
            values.append("%s")
            params.append(
                field.get_db_prep_save(field.pre_save(template, True), connection)
            )
    sql = (
        f"INSERT INTO {Preference._meta.db_table} ({', '.join(columns)}) "  # noqa: S608 - names from the model
        f"SELECT {', '.join(values)} FROM pairs p CROSS JOIN r "
        "WHERE array_position(r.o, p.a) IS NOT NULL "
        "AND array_position(r.o, p.b) IS NOT NULL RETURNING 1"
    )
    return sql, params


# The writes of a new ranking, one statement: the ranking, its implied
# preferences (one per implied pair of the comparison), then what every label
# writes (queue.LABEL_WRITES_SQL: counters, lease, stale reports).
_RANKING_SQL = "".join(
    (
        """
WITH r AS (SELECT %s::bigint[] AS o, %s::int[] AS k),
rk AS ({ranking}),
pairs AS (
    SELECT c.id, c.completion_a_id AS a, c.completion_b_id AS b
    FROM labeling_comparison c WHERE c.parent_id = %s
),
prefs AS ({implied}),
""",
        queue.LABEL_WRITES_SQL,
        "SELECT (SELECT id FROM rk), (SELECT count(*) FROM prefs), "
        "(SELECT count(*) FROM stale)\n",
    )
)


def _write_ranking(
    *, ranking: Ranking, comparison: Comparison, lease: Lease, now: Any
) -> tuple[int, int, bool]:
    """Run ``_RANKING_SQL``: returns the ranking's id, how many implied
    preferences were written, and whether a reports refresh was requested.
    Call inside ``atomic()`` holding the comparison's row lock."""
    ranking_sql, ranking_params = _insert_sql(ranking)
    template = Preference(
        annotator_id=ranking.annotator_id,
        lease=lease,
        choice=Preference.Choice.TIE,
        a_on_left=False,
        rationale=ranking.reason,
        source=Preference.Source.RANKING,
    )
    implied_sql, implied_params = _implied_insert_sql(template=template)
    with connection.cursor() as cursor:
        cursor.execute(
            _RANKING_SQL.format(ranking=ranking_sql, implied=implied_sql),
            [
                ranking.order,
                ranking.ranks,
                *ranking_params,
                comparison.pk,
                *implied_params,
                *queue.label_writes_params(comparison=comparison, lease=lease, now=now),
            ],
        )
        ranking_pk, implied, stale = cursor.fetchone()
    return ranking_pk, implied, bool(stale)


def _implied_preferences_complete(*, ranking: Ranking, comparison: Comparison) -> None:
    """Write the implied preferences of pairs the statement did not find (a
    ranked comparison made without its implied pairs): they are created
    first. Call inside ``atomic()``."""
    rank_of = ranking.rank_of()
    shown_at = {cid: i for i, cid in enumerate(ranking.order)}
    have = set(
        Preference.objects.filter(ranking=ranking).values_list(
            "comparison_id", flat=True
        )
    )
    Preference.objects.bulk_create(
        [
            Preference(
                comparison_id=pair.pk,
                annotator_id=ranking.annotator_id,
                lease_id=ranking.lease_id,
                choice=implied_choice(
                    rank_of[pair.completion_a_id], rank_of[pair.completion_b_id]
                ),
                a_on_left=shown_at[pair.completion_a_id]
                < shown_at[pair.completion_b_id],
                rationale=ranking.reason,
                source=Preference.Source.RANKING,
                ranking=ranking,
            )
            for pair in _implied_pairs(comparison)
            if pair.pk not in have
        ]
    )


def _submit(
    *, lease_id: int, annotator: AbstractBaseUser, answer: dict[str, Any]
) -> tuple[RankingResult, Lease]:
    """``ranking_submit``'s work. Call inside ``atomic()``."""
    # The pair queue's read: the annotator's advisory lock, the lease with its
    # campaign and comparison, the comparison row locked.
    lease = queue._lease_for_record(lease_id=lease_id, annotator=annotator)
    if lease is None:
        raise LeaseNotFound("That comparison is not assigned to you.")
    comparison = lease.comparison
    order = list(lease.order or [])
    if not comparison.is_ranked or not order:
        raise LabelingError("This lease is for a pair: submit a preference.")
    ranks = _check_ranks(answer.get("ranks"), k=len(order))
    none_acceptable = bool(answer.get("none_acceptable"))
    reason = (answer.get("reason") or "").strip()
    if len(reason) > REASON_MAX:
        raise LabelingError(
            f"reason: at most {REASON_MAX} characters.", extra={"field": "reason"}
        )

    if annotator.pk in comparison.done_by:
        existing = Ranking.objects.filter(
            comparison=comparison, annotator=annotator
        ).first()
        if existing is not None:
            return RankingResult(ranking=existing, created=False), lease

    now = timezone.now()
    lease_live = lease.status == Lease.Status.ACTIVE and lease.expires_at > now
    other_live = queue._live_expiries(comparison, now=now, without=lease.expires_at)
    if not comparison.is_gold:
        if (
            not lease_live
            and comparison.label_count + len(other_live) >= lease.campaign.overlap_k
        ):
            raise ComparisonFull(
                "This comparison already has all the rankings it needs. "
                "Here is the next one."
            )
        if comparison.status != Comparison.Status.OPEN:
            raise ComparisonFull("This comparison is closed. Here is the next one.")

    ranking = Ranking(
        comparison=comparison,
        annotator=annotator,
        lease=lease,
        order=order,
        ranks=ranks,
        none_acceptable=none_acceptable,
        reason=reason,
        time_spent_ms=answer.get("time_spent_ms"),
        client_request_id=answer.get("client_request_id") or "",
    )
    ranking.full_clean(
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
    lease.status = Lease.Status.SUBMITTED
    ranking_pk, implied, reports_queued = _write_ranking(
        ranking=ranking, comparison=comparison, lease=lease, now=now
    )
    ranking.pk = ranking_pk
    ranking._state.adding = False
    if implied < len(order) * (len(order) - 1) // 2:
        _implied_preferences_complete(ranking=ranking, comparison=comparison)
    if reports_queued:
        enqueue(REFRESH_TASK, comparison.campaign_id, countdown=REFRESH_COUNTDOWN_S)
    logger.info(
        "labeling.ranking.recorded comparison=%s annotator=%s",
        comparison.pk,
        annotator.pk,
    )
    return RankingResult(ranking=ranking, created=True), lease


@transaction.atomic
def ranking_submit(
    *,
    lease_id: int,
    annotator: AbstractBaseUser,
    ranks: Sequence[int],
    none_acceptable: bool = False,
    reason: str = "",
    client_request_id: str = "",
    time_spent_ms: int | None = None,
) -> RankingResult:
    """``ranking_record`` by lease id, saying whether the ranking was created
    (False: an earlier submit's ranking, returned unchanged)."""
    return _submit(
        lease_id=lease_id,
        annotator=annotator,
        answer=dict(
            ranks=list(ranks),
            none_acceptable=none_acceptable,
            reason=reason,
            client_request_id=client_request_id,
            time_spent_ms=time_spent_ms,
        ),
    )[0]


def ranking_record(
    *,
    lease: Lease,
    user: AbstractBaseUser,
    ranks: Sequence[int],
    none_acceptable: bool = False,
    reason: str = "",
    client_request_id: str = "",
    time_spent_ms: int | None = None,
) -> Ranking:
    """Store ``user``'s ranking for ``lease``; see the module docstring."""
    return ranking_submit(
        lease_id=lease.pk,
        annotator=user,
        ranks=ranks,
        none_acceptable=none_acceptable,
        reason=reason,
        client_request_id=client_request_id,
        time_spent_ms=time_spent_ms,
    ).ranking


@dataclass(frozen=True)
class RankingNextResult:
    """A recorded ranking and what follows it: the next card, or why none."""

    record: RankingResult
    campaign: Campaign
    next: LeasedRanking | None
    # "empty" (nothing left for this annotator) or "closed" (paused,
    # archived or no longer theirs; the ranking is saved).
    no_next: str = ""


def ranking_record_and_lease_next(
    *, lease_id: int, annotator: AbstractBaseUser, **answer: Any
) -> RankingNextResult:
    """``ranking_submit`` then the next lease of the same campaign in one
    transaction, as ``queue.preference_record_and_lease_next`` does for
    pairs. A refused ranking raises and leases nothing."""
    with transaction.atomic():
        record, lease = _submit(lease_id=lease_id, annotator=annotator, answer=answer)
        campaign = lease.campaign
        if campaign.status != Campaign.Status.ACTIVE or not (
            lease.may_label or roles.is_reviewer(annotator)
        ):
            return RankingNextResult(
                record=record, campaign=campaign, next=None, no_next="closed"
            )
        try:
            leased = queue._lease_next_locked(
                campaign=campaign,
                annotator=annotator,
                exclude_lease=lease.pk,
                wait_for_locked=False,
            )
            nxt: LeasedRanking | None = LeasedRanking(
                lease=leased.lease, card=_card(leased)
            )
        except NothingToLabel:
            nxt = None
    if nxt is None:
        try:
            nxt = ranking_lease_next(campaign=campaign, annotator=annotator)
        except (NothingToLabel, CampaignNotAvailable):
            return RankingNextResult(
                record=record, campaign=campaign, next=None, no_next="empty"
            )
    return RankingNextResult(record=record, campaign=campaign, next=nxt)
