from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import user_passes_test
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core import roles
from core.exceptions import ApplicationError
from labeling.models import Campaign, Preference
from labeling.selectors import lease_blind_pair
from labeling.services.queue import preference_record
from models_hub import selectors
from models_hub.models import Adapter
from models_hub.services import exports, registry
from models_hub.services.review import review_blind_lease_next

reviewer_required = user_passes_test(roles.is_reviewer)
admin_required = user_passes_test(roles.is_admin)


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


@admin_required
@require_POST
def adapter_action(request: HttpRequest, adapter_id: int, action: str) -> HttpResponse:
    adapter = get_object_or_404(Adapter, pk=adapter_id)
    reason = request.POST.get("reason", "")
    try:
        if action == "promote":
            registry.adapter_promote(
                adapter=adapter,
                actor=request.user,
                override=bool(request.POST.get("override")),
                reason=reason,
            )
            messages.success(request, f"{adapter} is now the champion.")
        elif action == "retire":
            registry.adapter_retire(adapter=adapter, actor=request.user, reason=reason)
            messages.success(request, f"{adapter} retired.")
        elif action == "rollback":
            back = registry.adapter_rollback(
                campaign=adapter.campaign,
                role=adapter.role,
                actor=request.user,
                reason=reason,
            )
            messages.success(request, f"Rolled back: {back} is the champion again.")
        elif action == "merge":
            exports.adapter_merge_export_enqueue(adapter=adapter)
            messages.success(request, "Merged export queued on the GPU worker.")
        else:
            messages.error(request, "Unknown action.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(request.POST.get("next") or "models_hub:adapter-list")


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
    board = report.payload or {}
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


@reviewer_required
@require_GET
def compare(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    versions = selectors.versions_for_campaign(campaign=campaign)
    left_key, right_key = request.GET.get("left"), request.GET.get("right")
    context = {
        "campaign": campaign,
        "versions": versions,
        "left_key": left_key,
        "right_key": right_key,
    }
    if left_key and right_key:
        left, right = (
            selectors.version_get(key=left_key),
            selectors.version_get(key=right_key),
        )
        context.update(
            left=left,
            right=right,
            **selectors.side_by_side(campaign=campaign, left=left, right=right),
        )
    return render(request, "models_hub/compare.html", context)


@reviewer_required
@require_POST
def compare_generate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    from models_hub.services.review import review_outputs_enqueue

    campaign = get_object_or_404(Campaign, pk=campaign_id)
    keys = [k for k in (request.POST.get("left"), request.POST.get("right")) if k]
    review_outputs_enqueue(campaign=campaign, version_keys=keys)
    messages.info(
        request, "Generating the missing outputs on the GPU worker; reload in a minute."
    )
    return redirect(
        f"{request.path.rsplit('/generate/', 1)[0]}/?left={keys[0]}&right={keys[-1]}"
    )


@reviewer_required
@require_http_methods(["GET", "POST"])
def blind_review(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Vote on outputs of two versions without knowing which is which; the
    votes are recorded as labels (source "reviewer")."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    left_key, right_key = request.GET.get("left", ""), request.GET.get("right", "")
    if request.method == "POST" and request.POST.get("lease"):
        try:
            preference_record(
                lease_id=int(request.POST["lease"]),
                annotator=request.user,
                choice=request.POST.get("choice", ""),
                rationale=request.POST.get("rationale", ""),
                source=Preference.Source.REVIEWER,
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
    lease = review_blind_lease_next(
        campaign=campaign, reviewer=request.user, left_key=left_key, right_key=right_key
    )
    pair = lease_blind_pair(lease=lease) if lease is not None else None
    return render(
        request,
        "models_hub/blind.html",
        {
            "campaign": campaign,
            "pair": pair,
            "left_key": left_key,
            "right_key": right_key,
        },
    )
