"""The loop page of a campaign: rounds, champion, win rate per round and what
the loop waits for, refreshed by htmx while a job runs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.roles import reviewer_required
from training.loop import campaign_loop_get


@reviewer_required
@require_GET
def campaign_loop(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The whole page; an htmx request gets only the polled status fragment
    (which carries the timeline and chart, since a round may finish)."""
    loop = campaign_loop_get(campaign_id=campaign_id)
    template = "training/loop.html"
    return render(
        request,
        f"{template}#loop-status" if request.htmx else template,
        {"loop": loop, "campaign": loop.campaign},
    )
