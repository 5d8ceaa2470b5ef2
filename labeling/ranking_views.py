"""The annotator's ranking card (campaign mode "rank", issue 14 §1): the
prompt and its K completions, lettered and shuffled per lease like a pair's
sides, ordered best first. Leasing, the start page and the "done" card are
``labeling.views``'; ``views._card`` hands a rank campaign's card to
``ranking_card_page``. A submit answers with the next card, as a pair's does.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.exceptions import ApplicationError
from labeling import selectors, views
from labeling.exceptions import ComparisonFull, LeaseNotFound
from labeling.forms import RankingForm
from labeling.models import Campaign, Lease, Ranking
from labeling.selectors.labels import label_annotators
from labeling.selectors.ranking import (
    RankingCard,
    ranking_card,
    ranking_for_lease,
)
from labeling.services import queue
from labeling.services.ranking import LeasedRanking, ranking_record_and_lease_next


def _order_text(letters_ranks: list[tuple[str, int]]) -> str:
    """ "C, A = D, B": best first, ties joined by "=" (for the answered note)."""
    groups: dict[int, list[str]] = {}
    for letter, rank in sorted(letters_ranks, key=lambda lr: (lr[1], lr[0])):
        groups.setdefault(rank, []).append(letter)
    return ", ".join(" = ".join(group) for group in groups.values())


def _lease_context(
    *, lease: Lease, card: RankingCard, answer: dict[str, Any] | None
) -> dict[str, Any]:
    """A leased comparison's part of the card: the answers with the place
    each shows (as posted when a submit was refused, else the order shown),
    or the ranking already given (best first), or that it was skipped."""
    ranks = (answer or {}).get("ranks") or list(range(1, card.k + 1))
    context: dict[str, Any] = {
        "card": card,
        "places": range(1, card.k + 1),
        "rank_rows": [
            (letter, html, rank)
            for (letter, html), rank in zip(card.items, ranks, strict=True)
        ],
        "answered": None,
    }
    answered: Ranking | None = (
        ranking_for_lease(lease=lease) if answer is None else None
    )
    # Its letters are the lease's only when it was given on this lease's order.
    if answered is not None and answered.order == lease.order:
        context["answered"] = {
            "order_text": _order_text(
                [
                    (letter, r)
                    for (letter, _html), r in zip(
                        card.items, answered.ranks, strict=True
                    )
                ]
            ),
            "none_acceptable": answered.none_acceptable,
        }
        by_rank = sorted(
            zip(card.items, answered.ranks, strict=True), key=lambda row: row[1]
        )
        context["rank_rows"] = [(letter, html, r) for (letter, html), r in by_rank]
    context["skipped"] = answered is None and lease.status == Lease.Status.SKIPPED
    return context


def ranking_card_page(
    request: HttpRequest,
    *,
    campaign: Campaign,
    lease_id: int | None,
    lease: Lease | None = None,
    card: RankingCard | None = None,
    status: int = 200,
    answer: dict[str, Any] | None = None,
) -> HttpResponse:
    """The card of a rank campaign: a lease to rank, a lease already ranked
    or skipped, or "done". ``lease`` and ``card`` (just leased) spare reading
    them again; ``answer`` is what a refused submit had posted."""
    context: dict[str, Any] = {
        "campaign": campaign,
        "progress": selectors.annotator_card_progress(
            campaign=campaign, annotator=request.user
        ),
        "card": None,
        "lease_id": lease_id,
        "request_id": uuid.uuid4().hex,
        "suppress_messages": True,
        "answer": answer or {},
    }
    if lease is None and lease_id is not None:
        lease = selectors.lease_get_for_annotator(
            annotator=request.user, lease_id=lease_id
        )
    if lease is not None:
        card = card if card is not None else ranking_card(lease=lease)
        context |= _lease_context(lease=lease, card=card, answer=answer)
    template = "labeling/ranking.html"
    response = render(
        request,
        template + "#comparison-card" if request.htmx else template,
        context,
        status=status,
    )
    if request.htmx:
        response["HX-Push-Url"] = (
            reverse("labeling:lease-detail", args=[campaign.pk, lease_id])
            if lease_id
            else reverse("labeling:label-done", args=[campaign.pk])
        )
    return response


@require_POST
def lease_rank_submit(
    request: HttpRequest, campaign_id: int, lease_id: int
) -> HttpResponse:
    """Record the posted order (a place per completion, aligned with the
    order shown; equal places are ties) or skip, then answer with the next
    card. Bad input is refused with the card again (400) and stores nothing.
    As with pairs, a lease taken before the campaign was paused may still
    be answered."""
    lease = selectors.lease_get_for_annotator(annotator=request.user, lease_id=lease_id)
    campaign = lease.campaign
    if campaign.pk != campaign_id or not lease.order:
        raise LeaseNotFound("Those answers are not assigned to you for ranking.")
    form = RankingForm(request.POST, k=len(lease.order))
    if not form.is_valid():
        messages.error(request, form.error_text())
        return _refused(request, campaign=campaign, lease=lease, form=form)
    try:
        if form.cleaned_data["intent"] == "skip":
            queue.lease_skip(lease_id=lease.pk, annotator=request.user)
        else:
            # The next comparison is leased in the same transaction (one
            # round trip per ranking, as for pairs).
            outcome = ranking_record_and_lease_next(
                lease_id=lease.pk, annotator=request.user, **form.ranking_kwargs()
            )
            if outcome.no_next != "closed":
                return _next_card(
                    request, campaign=outcome.campaign, leased=outcome.next
                )
    except ComparisonFull as exc:
        messages.info(request, exc.message)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _refused(request, campaign=campaign, lease=lease, form=form)
    campaign.refresh_from_db(fields=["status"])
    if campaign.status != Campaign.Status.ACTIVE:
        return views._campaign_closed(request, campaign)
    return views._next(request, campaign_id)


def _next_card(
    request: HttpRequest, *, campaign: Campaign, leased: LeasedRanking | None
) -> HttpResponse:
    """htmx: the card just leased (or "done"); a plain post is redirected
    to its page."""
    lease_id = leased.lease.pk if leased is not None else None
    if request.htmx:
        return ranking_card_page(
            request,
            campaign=campaign,
            lease_id=lease_id,
            lease=leased.lease if leased is not None else None,
            card=leased.card if leased is not None else None,
        )
    if lease_id is None:
        return redirect("labeling:label-done", campaign.pk)
    return redirect("labeling:lease-detail", campaign.pk, lease_id)


def _refused(
    request: HttpRequest, *, campaign: Campaign, lease: Lease, form: RankingForm
) -> HttpResponse:
    """The card again with what was posted and why it was refused (400;
    label.js lets htmx swap it in)."""
    return ranking_card_page(
        request,
        campaign=campaign,
        lease_id=lease.pk,
        lease=lease,
        status=400,
        answer=form.posted_answer(),
    )


def ranking_quality_context(
    *, campaign: Campaign, figures: dict[str, Any] | None
) -> dict[str, Any]:
    """The quality page's ranking figures (from the cached quality report's
    ``ranking`` part; absent while it is computed) and each annotator's mean
    Kendall's tau against gold rankings, by name."""
    if not figures:
        return {}
    gold = figures.get("gold") or {}
    names = dict(label_annotators(campaign=campaign)) if gold else {}
    return {
        "ranking": figures,
        "ranking_gold": sorted(
            (
                (names.get(int(annotator_id), f"#{annotator_id}"), score)
                for annotator_id, score in gold.items()
            ),
            key=lambda row: row[0],
        ),
    }
