from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
)

from core.exceptions import ApplicationError
from core.roles import admin_required, reviewer_required
from ml.memory import suggest_smaller_batch
from training import selectors
from training.forms import JobLaunchForm
from training.services import jobs as job_services


@reviewer_required
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = [
        selectors.training_job_summary(job=job)
        for job in selectors.training_job_list()[:100]
    ]
    template = (
        "training/job_list.html#job-table" if request.htmx else "training/job_list.html"
    )
    return render(
        request,
        template,
        {"jobs": jobs, "any_active": any(s.job.is_active for s in jobs)},
    )


@admin_required
@require_http_methods(["GET", "POST"])
def job_launch(request: HttpRequest) -> HttpResponse:
    """GET shows the form with what would run; a POST with ``preview``
    (the htmx refresh on every change, or the button without JavaScript)
    only shows it again; any other POST launches."""
    form = JobLaunchForm(
        request.POST or None, initial={"campaign": request.GET.get("campaign")}
    )
    previewing = bool(request.POST.get("preview"))
    if request.method == "POST" and not previewing and form.is_valid():
        try:
            job = job_services.training_job_launch(
                campaign=form.cleaned_data["campaign"],
                method=form.cleaned_data["method"],
                created_by=request.user,
                config=form.config_overrides(),
                base_model=form.cleaned_data["base_model"],
                snapshot=form.cleaned_data["snapshot"],
                **form.resources(),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("training:job-detail", job.pk)
    plan, plan_error = form.plan()
    template = "training/job_launch.html"
    if request.htmx and previewing:
        template += "#job-preview"
    return render(
        request,
        template,
        {"form": form, "plan": plan, "plan_error": plan_error},
        status=400 if form.errors and not previewing else 200,
    )


@admin_required
@require_POST
def job_relaunch(request: HttpRequest, job_id: int) -> HttpResponse:
    """A new job like this one: ``smaller=yes`` halves the micro-batch and
    doubles gradient accumulation (the out-of-memory suggestion)."""
    job = selectors.training_job_get(job_id=job_id)
    try:
        new = job_services.training_job_relaunch(
            job=job,
            created_by=request.user,
            smaller=request.POST.get("smaller") == "yes",
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("training:job-detail", job_id)
    messages.success(request, f"Job {new.pk} launched like job {job.pk}.")
    return redirect("training:job-detail", new.pk)


@reviewer_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = selectors.training_job_get(job_id=job_id)
    status = {
        "job": job,
        "summary": selectors.training_job_summary(job=job),
        "heartbeat_warning": selectors.heartbeat_warning_seconds(),
        "heartbeat_timeout": settings.ARBITER_HEARTBEAT_TIMEOUT,
        "smaller_batch": suggest_smaller_batch(
            int(job.config.get("per_device_train_batch_size", 1)),
            int(job.config.get("gradient_accumulation_steps", 1)),
        ),
    }
    if request.htmx:
        # The poll swaps only the status card; charts update from job_metrics.
        return render(request, "training/job_detail.html#job-status", status)
    context = {
        **status,
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
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """GET asks for confirmation (the page a click without JavaScript opens);
    a POST cancels only with ``confirm=yes``, which the confirmation form and
    the htmx button (after ``hx-confirm``) send."""
    job = selectors.training_job_get(job_id=job_id)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        return render(
            request,
            "training/job_cancel.html",
            {"job": job, "summary": selectors.training_job_summary(job=job)},
        )
    job = job_services.training_job_cancel(job=job)
    if request.htmx:
        return job_detail(request, job_id)
    messages.success(
        request,
        f"Job {job.pk} cancelled before it started: no adapter was kept."
        if job.status == job.Status.CANCELLED
        else f"Cancel requested: job {job.pk} stops within a training step and "
        "keeps no adapter.",
    )
    return redirect("training:job-detail", job_id)
