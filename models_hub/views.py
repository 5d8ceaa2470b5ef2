from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.exceptions import ApplicationError
from core.http import redirect_next
from core.roles import admin_required, reviewer_required
from labeling.models import Campaign, Lease, Preference, Prompt
from labeling.selectors import lease_blind_pair
from labeling.services.queue import preference_record
from models_hub import selectors
from models_hub.models import Adapter, GenerationJob
from models_hub.services import exports, generation, registry
from models_hub.services.review import review_blind_lease_next, review_outputs_enqueue
from models_hub.versions import VersionKey, version_pair_parse


@reviewer_required
@require_GET
def adapter_list(request: HttpRequest) -> HttpResponse:
    campaign_id = request.GET.get("campaign")
    campaign = (
        Campaign.objects.filter(pk=campaign_id).first()
        if campaign_id and campaign_id.isdigit()
        else None
    )
    return render(
        request,
        "models_hub/adapter_list.html",
        {
            "adapters": selectors.adapter_list(campaign=campaign),
            "campaigns": Campaign.objects.all(),
            "campaign": campaign,
        },
    )


def _promote(request: HttpRequest, adapter: Adapter) -> str:
    registry.adapter_promote(
        adapter=adapter,
        actor=request.user,
        override=bool(request.POST.get("override")),
        reason=request.POST.get("reason", ""),
    )
    return f"{adapter} is now the champion."


def _retire(request: HttpRequest, adapter: Adapter) -> str:
    registry.adapter_retire(
        adapter=adapter, actor=request.user, reason=request.POST.get("reason", "")
    )
    return f"{adapter} retired."


def _rollback(request: HttpRequest, adapter: Adapter) -> str:
    back = registry.adapter_rollback(
        campaign=adapter.campaign,
        role=adapter.role,
        actor=request.user,
        reason=request.POST.get("reason", ""),
    )
    if back is None:
        return "Rolled back: the base model serves again (no champion)."
    return f"Rolled back: {back} is the champion again."


def _merge(request: HttpRequest, adapter: Adapter) -> str:
    exports.adapter_merge_export_enqueue(adapter=adapter)
    return "Merged export queued on the GPU worker."


# The adapter actions a page can post, each to one service; any other → 404.
ADAPTER_ACTIONS: dict[str, Callable[[HttpRequest, Adapter], str]] = {
    "promote": _promote,
    "retire": _retire,
    "rollback": _rollback,
    "merge": _merge,
}


@admin_required
@require_POST
def adapter_action(request: HttpRequest, adapter_id: int, action: str) -> HttpResponse:
    handler = ADAPTER_ACTIONS.get(action)
    if handler is None:
        raise Http404(f"No adapter action {action!r}.")
    adapter = get_object_or_404(Adapter, pk=adapter_id)
    try:
        messages.success(request, handler(request, adapter))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect_next(request, "models_hub:adapter-list")


@reviewer_required
@require_GET
def adapter_download(request: HttpRequest, adapter_id: int) -> FileResponse:
    adapter = get_object_or_404(Adapter, pk=adapter_id)
    return FileResponse(
        exports.adapter_archive(adapter=adapter),
        as_attachment=True,
        filename=f"{adapter.name}.zip",
    )


@reviewer_required
@require_GET
def leaderboard(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    report = selectors.leaderboard_cached(campaign=campaign)
    board = selectors.leaderboard_named(board=report.payload) if report.payload else {}
    return render(
        request,
        "models_hub/leaderboard.html",
        {
            "campaign": campaign,
            "report": report,
            "board": board,
            "chart": selectors.leaderboard_chart(board) if board else None,
        },
    )


def _compare_url(campaign: Campaign, *, left: VersionKey, right: VersionKey) -> str:
    query = urlencode({"left": str(left), "right": str(right)})
    return f"{reverse('models_hub:compare', args=[campaign.pk])}?{query}"


@reviewer_required
@require_GET
def compare(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    left_key, right_key = request.GET.get("left"), request.GET.get("right")
    context = {
        "campaign": campaign,
        "versions": selectors.versions_for_campaign(campaign=campaign),
        "left_key": left_key,
        "right_key": right_key,
    }
    if not (left_key and right_key):
        return render(request, "models_hub/compare.html", context)
    try:
        left, right = selectors.version_pair_get(left=left_key, right=right_key)
        side_by_side = selectors.side_by_side(campaign=campaign, left=left, right=right)
        context.update(
            left=left,
            right=right,
            pairs_ready=len(side_by_side["rows"]) - side_by_side["missing"],
            **side_by_side,
        )
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(
            request, "models_hub/compare.html", context, status=exc.status_code
        )
    return render(request, "models_hub/compare.html", context)


@reviewer_required
@require_POST
def compare_generate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        left, right = version_pair_parse(
            request.POST.get("left"), request.POST.get("right")
        )
        review_outputs_enqueue(campaign=campaign, left=left, right=right)
    except ApplicationError as exc:
        return render(
            request,
            "error.html",
            {"message": exc.message, "status": exc.status_code},
            status=exc.status_code,
        )
    messages.info(
        request, "Generating the missing outputs on the GPU worker; reload in a minute."
    )
    return redirect(_compare_url(campaign, left=left, right=right))


@reviewer_required
@require_http_methods(["GET", "POST"])
def blind_review(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Vote on outputs of two versions without knowing which is which; the
    votes are recorded as labels (source "reviewer"). GET shows the live
    lease, if any, and never writes; POST records a vote (when it carries a
    lease) and leases the next pair."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    left_key, right_key = request.GET.get("left", ""), request.GET.get("right", "")
    context = {"campaign": campaign, "left_key": left_key, "right_key": right_key}
    try:
        left, right = version_pair_parse(left_key, right_key)
        if request.method == "POST":
            lease = _blind_vote_and_lease_next(
                request, campaign=campaign, left=left, right=right
            )
            context["finished"] = lease is None
        else:
            lease = selectors.review_blind_lease_live(
                campaign=campaign, reviewer=request.user
            )
        if lease is None:
            context["has_outputs"] = _both_have_outputs(
                campaign=campaign, left=left, right=right
            )
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "models_hub/blind.html", context, status=exc.status_code)
    context["pair"] = lease_blind_pair(lease=lease) if lease is not None else None
    return render(request, "models_hub/blind.html", context)


def _both_have_outputs(
    *, campaign: Campaign, left: VersionKey, right: VersionKey
) -> bool:
    """Whether some golden prompt has an output of each version: the pairs
    blind mode can offer. Stops at the first such prompt."""
    a, b = selectors.version_get(key=left), selectors.version_get(key=right)
    return any(
        selectors.version_latest_completion(prompt, a) is not None
        and selectors.version_latest_completion(prompt, b) is not None
        for prompt in Prompt.objects.filter(campaign=campaign, is_golden=True)
    )


def _blind_vote_and_lease_next(
    request: HttpRequest, *, campaign: Campaign, left: VersionKey, right: VersionKey
) -> Lease | None:
    raw_lease = request.POST.get("lease")
    if raw_lease is not None:
        if not raw_lease.isascii() or not raw_lease.isdigit():
            raise ApplicationError(f"{raw_lease!r} is not a lease id.")
        try:
            preference_record(
                lease_id=int(raw_lease),
                annotator=request.user,
                choice=request.POST.get("choice", ""),
                rationale=request.POST.get("rationale", ""),
                source=Preference.Source.REVIEWER,
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
    return review_blind_lease_next(
        campaign=campaign, reviewer=request.user, left_key=left, right_key=right
    )


# ---------------------------------------------------------------- generation jobs


def _campaign_filter(request: HttpRequest) -> Campaign | None:
    """The campaign ``?campaign=<id>`` names; None when absent or malformed
    (the list then shows every campaign's jobs)."""
    raw = request.GET.get("campaign", "")
    if not (raw.isascii() and raw.isdigit()):
        return None
    return Campaign.objects.filter(pk=int(raw)).first()


def _generation_list_url(campaign: Campaign) -> str:
    return f"{reverse('models_hub:generation-job-list')}?campaign={campaign.pk}"


@reviewer_required
@require_GET
def generation_job_list(request: HttpRequest) -> HttpResponse:
    campaign = _campaign_filter(request)
    jobs = [
        selectors.generation_job_summary(job=job)
        for job in selectors.generation_job_list(campaign=campaign)[:100]
    ]
    context = {
        "jobs": jobs,
        "any_active": any(s.job.is_active for s in jobs),
        "campaign": campaign,
        "campaigns": Campaign.objects.order_by("name"),
    }
    if campaign is not None:
        context["open_pairs"] = generation.open_pair_count(campaign=campaign)
        context["prompts_waiting"] = generation.prompts_without_open_pairs(
            campaign=campaign
        ).count()
    template = "models_hub/generation_job_list.html"
    return render(
        request, f"{template}#job-table" if request.htmx else template, context
    )


@admin_required
@require_POST
def campaign_bootstrap(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        job = generation.generation_bootstrap_launch(
            campaign=campaign, actor=request.user
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(_generation_list_url(campaign))
    messages.success(
        request,
        f"Bootstrap round queued as job {job.pk}: the GPU worker answers the prompts "
        "that have no open pair and queues the new pairs.",
    )
    return redirect("models_hub:generation-job-detail", job.pk)


@reviewer_required
@require_GET
def generation_job_detail(request: HttpRequest, generation_job_id: int) -> HttpResponse:
    job = selectors.generation_job_get(job_id=generation_job_id)
    template = "models_hub/generation_job_detail.html"
    return render(
        request,
        f"{template}#job-status" if request.htmx else template,
        {
            "job": job,
            "summary": selectors.generation_job_summary(job=job),
            "heartbeat_warning": selectors.GENERATION_HEARTBEAT_STALE_SECONDS,
            "heartbeat_timeout": settings.ARBITER_HEARTBEAT_TIMEOUT,
        },
    )


@admin_required
@require_POST
def generation_job_cancel(request: HttpRequest, generation_job_id: int) -> HttpResponse:
    job = selectors.generation_job_get(job_id=generation_job_id)
    try:
        job = generation.generation_job_cancel(job=job)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Job {job.pk} cancelled before it started: it writes no completions."
            if job.status == GenerationJob.Status.CANCELLED
            else f"Cancel requested: job {job.pk} stops after the batch it is "
            "writing; no further completions will be written.",
        )
    return redirect("models_hub:generation-job-detail", job.pk)
