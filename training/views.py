from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
)

from core.exceptions import ApplicationError
from core.roles import admin_required, reviewer_required
from training import selectors
from training.forms import JobLaunchForm
from training.services import jobs as job_services


@reviewer_required
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = selectors.training_job_list()[:100]
    template = (
        "training/job_list.html#job-table" if request.htmx else "training/job_list.html"
    )
    return render(
        request, template, {"jobs": jobs, "any_active": any(j.is_active for j in jobs)}
    )


@admin_required
@require_http_methods(["GET", "POST"])
def job_launch(request: HttpRequest) -> HttpResponse:
    form = JobLaunchForm(
        request.POST or None, initial={"campaign": request.GET.get("campaign")}
    )
    if request.method == "POST" and form.is_valid():
        try:
            job = job_services.training_job_launch(
                campaign=form.cleaned_data["campaign"],
                method=form.cleaned_data["method"],
                created_by=request.user,
                config=form.config_overrides(),
                base_model=form.cleaned_data["base_model"],
                snapshot=form.cleaned_data["snapshot"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("training:job-detail", job.pk)
    return render(
        request,
        "training/job_launch.html",
        {"form": form},
        status=400 if form.errors else 200,
    )


@reviewer_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = selectors.training_job_get(job_id=job_id)
    if request.htmx:
        # The poll swaps only the status card; charts update from job_metrics.
        return render(request, "training/job_detail.html#job-status", {"job": job})
    context = {
        "job": job,
        "charts": selectors.training_job_charts(job=job),
        "config_json": json.dumps(job.config, indent=2, sort_keys=True),
    }
    return render(request, "training/job_detail.html", context)


@reviewer_required
@require_GET
def job_metrics(request: HttpRequest, job_id: int) -> JsonResponse:
    """Metric rows newer than ``?after=<row id>`` plus the job's progress."""
    try:
        after_id = int(request.GET.get("after", "0"))
    except ValueError:
        return JsonResponse({"detail": "after must be a row id."}, status=400)
    job = selectors.training_job_get(job_id=job_id)
    return JsonResponse(
        selectors.training_job_metrics_since(job=job, after_id=after_id)
    )


@admin_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job_services.training_job_cancel(job=selectors.training_job_get(job_id=job_id))
    if request.htmx:
        return job_detail(request, job_id)
    return redirect("training:job-detail", job_id)
