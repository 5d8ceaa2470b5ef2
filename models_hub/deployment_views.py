"""A campaign's deployment page: what its alias serves, how much each arm
answered, callers' feedback per version, the change form, one-click
rollback and the history; and the serving switch of the Models page."""

from __future__ import annotations

import math
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.exceptions import ApplicationError
from core.http import redirect_next
from core.roles import admin_required, reviewer_required
from labeling.models import Campaign
from models_hub import selectors
from models_hub.models import Adapter, Deployment
from models_hub.services import deployments

TEMPLATE = "models_hub/deployment.html"


def _share(post: QueryDict, name: str, errors: list[str]) -> float | None:
    """A share typed as 0.05 or 5%; None when left empty."""
    raw = post.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw.removesuffix("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        errors.append(f"{name}: {raw!r} is not a number.")
        return None
    if not math.isfinite(value):
        errors.append(f"{name}: must be a finite number.")
        return None
    return value


def _parse(post: QueryDict) -> tuple[dict[str, Any], list[str]]:
    """The change the form asks for, and what could not be read (the
    service refuses the rest, naming the reason)."""
    errors: list[str] = []
    mode = post.get("mode", "")
    raw_candidate = post.get("candidate", "").strip()
    candidate: int | None = None
    if mode != Deployment.Mode.CHAMPION and raw_candidate:
        if raw_candidate.isdigit():
            candidate = int(raw_candidate)
        else:
            errors.append(f"candidate: {raw_candidate!r} is not an adapter id.")
    change = {
        "mode": mode,
        "candidate": candidate,
        # A/B is always even: the share field only speaks for a canary.
        "candidate_share": _share(post, "candidate_share", errors)
        if mode == Deployment.Mode.CANARY
        else None,
        "sample_share": _share(post, "sample_share", errors),
        "reason": post.get("reason", ""),
    }
    return change, errors


def _page(
    request: HttpRequest,
    campaign: Campaign,
    *,
    errors: list[str] | None = None,
    status: int = 200,
) -> HttpResponse:
    template = f"{TEMPLATE}#deployment-state" if request.htmx else TEMPLATE
    return render(
        request,
        template,
        {
            "campaign": campaign,
            "summary": selectors.deployment_summary(campaign=campaign),
            "candidates": selectors.deployment_candidate_options(campaign=campaign),
            "modes": Deployment.Mode.choices,
            "deployment_errors": errors or [],
            "deployment_post": request.POST if errors else None,
        },
        status=status,
    )


@reviewer_required
@require_GET
def deployment_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    return _page(request, get_object_or_404(Campaign, pk=campaign_id))


@admin_required
@require_POST
def deployment_update_view(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Apply the form; a refusal shows the page again (400) with the reason
    and what was typed."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    change, errors = _parse(request.POST)
    if not errors:
        try:
            deployments.deployment_update(
                deployment=deployments.deployment_get_or_create(campaign),
                actor=request.user,
                **change,
            )
        except ApplicationError as exc:
            errors.append(exc.message)
        else:
            messages.success(request, "Deployment changed.")
            return redirect("models_hub:deployment", campaign.pk)
    return _page(request, campaign, errors=errors, status=400)


@admin_required
@require_POST
def deployment_rollback_view(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        deployments.deployment_rollback(
            deployment=deployments.deployment_get_or_create(campaign),
            actor=request.user,
            reason=request.POST.get("reason", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Rolled back the last change.")
    return redirect("models_hub:deployment", campaign.pk)


@admin_required
@require_POST
def adapter_serving_view(request: HttpRequest, adapter_id: int) -> HttpResponse:
    """Switch an adapter on or off for serving; back to ``next``."""
    adapter = get_object_or_404(Adapter, pk=adapter_id)
    enabled = request.POST.get("enabled") == "1"
    try:
        deployments.adapter_serving_set(
            adapter=adapter,
            enabled=enabled,
            actor=request.user,
            reason=request.POST.get("reason", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"{adapter} switched {'on' if enabled else 'off'} for serving.",
        )
    return redirect_next(request, "models_hub:adapter-list")
