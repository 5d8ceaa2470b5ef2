"""Reads for ranked comparisons (campaign mode "rank").

``ranking_card(*, lease)`` is what an annotator sees of a leased ranked
comparison: the prompt and its completions in the lease's shuffled order,
lettered A, B, C ... with no model or source named (the same blinding as a
pair's sides).
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from labeling.exceptions import LabelingError
from labeling.models import Campaign, Completion, Lease, Ranking
from labeling.rendering import completion_html_of
from labeling.selectors import _cut_at

LETTERS = string.ascii_uppercase[:9]


@dataclass(frozen=True)
class RankingCard:
    """What a lease's annotator sees of a ranked comparison."""

    lease_id: int
    campaign_id: int
    prompt: str | list[dict[str, str]]
    is_chat: bool
    # (letter, sanitised completion HTML), in the order shown.
    items: list[tuple[str, str]]
    # How many completions are ranked (3 to 9).
    k: int
    expires_at: Any
    # The plain texts, aligned with ``items`` (the API sends them).
    texts: list[str] = field(default_factory=list)
    # Tokens after which the model was stopped, per item; None when complete.
    cut_at: list[int | None] = field(default_factory=list)


def ranking_card(*, lease: Lease) -> RankingCard:
    """The annotator's view of ``lease`` (a lease of a ranked comparison;
    ``lease.order`` holds the completion ids in display order). One query
    (the completions with their prompt). Raises ``LabelingError`` for a pair lease.
    """
    order = list(lease.order or [])
    if not order:
        raise LabelingError("This lease is for a pair, not a ranking.")
    completions = {
        c.pk: c
        for c in Completion.objects.filter(pk__in=order)
        .select_related("prompt")
        .only("text", "html", "generation", "prompt__text", "prompt__messages")
    }
    if set(completions) != set(order):
        raise LabelingError("This comparison no longer exists.")
    shown = [completions[cid] for cid in order]
    prompt = shown[0].prompt
    return RankingCard(
        lease_id=lease.pk,
        campaign_id=lease.campaign_id,
        prompt=prompt.content,
        is_chat=prompt.is_chat,
        items=[(LETTERS[i], completion_html_of(c)) for i, c in enumerate(shown)],
        k=len(shown),
        expires_at=lease.expires_at,
        texts=[c.text for c in shown],
        cut_at=[_cut_at(c.generation) for c in shown],
    )


def ranking_card_of(
    *,
    lease: Lease,
    prompt: str | list[dict[str, str]],
    is_chat: bool,
    items: Sequence[Sequence[Any]],
) -> RankingCard:
    """The card of ``lease`` from rows already read (the queue statement's
    ``ranked_items``: [id, text, html, generation] in the order shown)."""
    shown = [Completion(pk=i[0], text=i[1], html=i[2], generation=i[3]) for i in items]
    return RankingCard(
        lease_id=lease.pk,
        campaign_id=lease.campaign_id,
        prompt=prompt,
        is_chat=is_chat,
        items=[(LETTERS[i], completion_html_of(c)) for i, c in enumerate(shown)],
        k=len(shown),
        expires_at=lease.expires_at,
        texts=[c.text for c in shown],
        cut_at=[_cut_at(c.generation) for c in shown],
    )


def ranking_for_lease(*, lease: Lease) -> Ranking | None:
    """The ranking given on ``lease``'s comparison by its annotator, if any."""
    return Ranking.objects.filter(
        comparison_id=lease.comparison_id, annotator_id=lease.annotator_id
    ).first()


def ranking_list(*, campaign: Campaign) -> QuerySet[Ranking]:
    """Every ranking of ``campaign``, oldest first."""
    return (
        Ranking.objects.filter(comparison__campaign=campaign)
        .select_related("annotator")
        .order_by("pk")
    )


def ranking_screen_ranks(*, ranking: Ranking) -> list[tuple[str, int]]:
    """(letter, rank) in the order the annotator saw the completions."""
    return [(LETTERS[i], r) for i, r in enumerate(ranking.ranks)]


def ranking_export_rows(
    *,
    campaign: Campaign,
    splits: list[str] | None = None,
    exclude_annotator_ids: list[int] | None = None,
    include_golden: bool = False,
    include_unacceptable: bool = False,
    chunk_size: int = 500,
) -> Iterator[dict[str, Any]]:
    """Yield rankings as listwise rows: ``prompt`` and ``completions`` best
    first, with ``ranks`` aligned (equal ranks are ties), plus metadata.
    Chat prompts stay message lists and completions become assistant turns
    (TRL's conversational format). Gold comparisons are never exported;
    rankings flagged "none acceptable" only with ``include_unacceptable``.
    Streamed from a server-side cursor."""
    qs = Ranking.objects.filter(
        comparison__campaign=campaign, comparison__is_gold=False
    )
    if not include_unacceptable:
        qs = qs.filter(none_acceptable=False)
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
        "order",
        "ranks",
        "none_acceptable",
        "reason",
        "created_at",
        "comparison__prompt__text",
        "comparison__prompt__messages",
        "comparison__prompt__split",
    )
    batch: list[tuple[Any, ...]] = []
    for row in rows.iterator(chunk_size=chunk_size):
        batch.append(row)
        if len(batch) >= chunk_size:
            yield from _listwise(batch)
            batch = []
    yield from _listwise(batch)


def _listwise(batch: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    ids = {cid for row in batch for cid in row[3]}
    texts = dict(Completion.objects.filter(pk__in=ids).values_list("pk", "text"))
    for (
        ranking_id,
        comparison_id,
        annotator_id,
        order,
        ranks,
        none_acceptable,
        reason,
        created_at,
        prompt_text,
        prompt_messages,
        split,
    ) in batch:
        chat = prompt_messages is not None
        best_first = sorted(zip(ranks, order, strict=True))
        yield {
            "prompt": prompt_messages if chat else prompt_text,
            "completions": [
                [{"role": "assistant", "content": texts[cid]}] if chat else texts[cid]
                for _rank, cid in best_first
            ],
            "ranks": [rank for rank, _cid in best_first],
            "none_acceptable": none_acceptable,
            "reason": reason,
            "split": split,
            "annotator_id": annotator_id,
            "ranking_id": ranking_id,
            "comparison_id": comparison_id,
            "created_at": created_at.isoformat(),
        }
