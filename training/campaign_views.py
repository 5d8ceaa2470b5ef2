"""The campaign settings page: reviewers read it, admins change it."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.roles import admin_required, is_admin, reviewer_required
from training.campaign_forms import settings_forms
from training.services.campaign_settings import (
    CampaignSettingsInvalid,
    campaign_settings_get,
    campaign_settings_update,
    settings_campaign_get,
)

TEMPLATE = "training/campaign_settings.html"


@reviewer_required
@require_http_methods(["GET", "POST"])
def campaign_settings(request: HttpRequest, campaign_id: int) -> HttpResponse:
    if request.method == "POST":
        return _campaign_settings_save(request, campaign_id)
    campaign = settings_campaign_get(user=request.user, campaign_id=campaign_id)
    settings = campaign_settings_get(campaign=campaign)
    forms = settings_forms(settings=settings, read_only=not is_admin(request.user))
    return render(request, TEMPLATE, {"settings": settings, "forms": forms})


@admin_required
def _campaign_settings_save(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Every section in one transaction. Without JavaScript: redirect after
    success, the page with its errors (400) after a refusal. With htmx: the
    form fragment, showing "Saved" or the errors next to their fields (as a
    200, since htmx swaps no 4xx by default)."""
    campaign = settings_campaign_get(user=request.user, campaign_id=campaign_id)
    settings = campaign_settings_get(campaign=campaign)
    forms = settings_forms(request.POST, settings=settings)
    saved = False
    if all(form.is_valid() for form in forms.values()):
        try:
            settings = campaign_settings_update(
                campaign=campaign,
                campaign_fields=forms["campaign"].changes(),
                training_fields=forms["training"].changes(),
                generation_fields=forms["generation"].changes(),
            )
        except CampaignSettingsInvalid as exc:
            for section, errors in exc.errors.items():
                forms[section].add_service_errors(errors)
        else:
            if not request.htmx:
                messages.success(request, "Saved.")
                return redirect("training:campaign-settings", campaign.pk)
            forms, saved = settings_forms(settings=settings), True
    context = {"settings": settings, "forms": forms, "saved": saved}
    if request.htmx:
        return render(request, f"{TEMPLATE}#settings-form", context)
    return render(request, TEMPLATE, context, status=400)
