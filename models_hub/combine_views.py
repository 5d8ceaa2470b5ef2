"""Combining adapters from the Models page: the form, its refusals, the job."""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from core.exceptions import ApplicationError
from core.roles import admin_required
from labeling.models import Campaign
from models_hub import selectors
from models_hub.models import Adapter
from models_hub.services.combine import combine_job_create, combine_job_get

HEARTBEAT_STALE_SECONDS = 30


def _parse(post: QueryDict) -> tuple[list[tuple[int, float]], float | None, list[str]]:
    """(adapter id, weight) pairs and the density from the form, and what
    could not be read (the service refuses the rest, naming the reason)."""
    errors: list[str] = []
    parents: list[tuple[int, float]] = []
    for raw in post.getlist("adapter"):
        if not raw.isdigit():
            errors.append(f"{raw!r} is not an adapter id.")
            continue
        weight = post.get(f"weight-{raw}", "").strip()
        try:
            parents.append((int(raw), float(weight)))
        except ValueError:
            errors.append(f"The weight of adapter {raw} is not a number: {weight!r}.")
    density_raw = post.get("density", "").strip()
    density = None
    if density_raw:
        try:
            density = float(density_raw)
        except ValueError:
            errors.append(f"The density is not a number: {density_raw!r}.")
        else:
            if not math.isfinite(density):
                errors.append("The density must be a finite number.")
    return parents, density, errors


def _form_adapters(
    campaign: Campaign | None, post: QueryDict | None = None
) -> Sequence[Adapter]:
    """The adapters the form lists, marked with what was posted."""
    adapters = list(selectors.adapter_list(campaign=campaign))
    if post is not None:
        picked = set(post.getlist("adapter"))
        for adapter in adapters:
            adapter.combine_checked = str(adapter.pk) in picked  # type: ignore[attr-defined]
            adapter.combine_weight = post.get(f"weight-{adapter.pk}", "1")  # type: ignore[attr-defined]
    return adapters


def _campaign(request: HttpRequest) -> Campaign | None:
    raw = request.GET.get("campaign") or request.POST.get("campaign", "")
    return Campaign.objects.filter(pk=raw).first() if raw.isdigit() else None


@admin_required
@require_http_methods(["GET", "POST"])
def combine_job_create_view(request: HttpRequest) -> HttpResponse:
    """GET: the form alone; POST: queue the job, or show the refusal (400)."""
    campaign = _campaign(request)
    context = {"campaign": campaign}
    if request.method == "GET":
        return render(
            request,
            "models_hub/combine_job_new.html",
            {**context, "adapters": _form_adapters(campaign)},
        )
    parents, density, errors = _parse(request.POST)
    if not errors:
        try:
            job = combine_job_create(
                parents=parents,
                method=request.POST.get("method", ""),
                density=density,
                name=request.POST.get("name", ""),
                actor=request.user,
            )
        except ApplicationError as exc:
            errors.append(exc.message)
        else:
            return redirect("models_hub:combine-job-detail", job.pk)
    return render(
        request,
        "models_hub/combine_job_new.html",
        {
            **context,
            "adapters": _form_adapters(campaign, request.POST),
            "combine_errors": errors,
            "combine_post": request.POST,
        },
        status=400,
    )


@admin_required
@require_GET
def combine_job_detail(request: HttpRequest, combine_job_id: int) -> HttpResponse:
    job = combine_job_get(job_id=combine_job_id)
    template = "models_hub/combine_job_detail.html"
    return render(
        request,
        f"{template}#job-status" if request.htmx else template,
        {
            "job": job,
            "round": job.adapter.generation_jobs.order_by("created_at", "id").first()
            if job.adapter is not None
            else None,
            "heartbeat_warning": HEARTBEAT_STALE_SECONDS,
            "heartbeat_timeout": settings.ARBITER_HEARTBEAT_TIMEOUT,
        },
    )
