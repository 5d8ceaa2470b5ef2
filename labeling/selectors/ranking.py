"""Reads for ranked comparisons (campaign mode "rank").

``ranking_card(*, lease)`` is what an annotator sees of a leased ranked
comparison: the prompt and its completions in the lease's shuffled order,
lettered A, B, C ... with no model or source named (the same blinding as a
pair's sides).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from labeling.exceptions import LabelingError
from labeling.models import Campaign, Comparison, Completion, Lease, Ranking
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
    ``lease.order`` holds the completion ids in display order). Two queries
    (the prompt, the completions). Raises ``LabelingError`` for a pair lease.
    """
    order = list(lease.order or [])
    if not order:
        raise LabelingError("This lease is for a pair, not a ranking.")
    prompt = (
        Comparison.objects.filter(pk=lease.comparison_id)
        .values_list("prompt__text", "prompt__messages")
        .first()
    )
    if prompt is None:
        raise LabelingError("This comparison no longer exists.")
    text, messages = prompt
    completions = {
        c.pk: c
        for c in Completion.objects.filter(pk__in=order).only(
            "text", "html", "generation"
        )
    }
    shown = [completions[cid] for cid in order]
    return RankingCard(
        lease_id=lease.pk,
        campaign_id=lease.campaign_id,
        prompt=messages if messages is not None else text,
        is_chat=messages is not None,
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
