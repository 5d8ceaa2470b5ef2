"""A campaign's drift page: each served version's series as charts, the open
alerts (acknowledged from here), the thresholds form and "evaluate now"
(admins)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.exceptions import ApplicationError
from core.forms import form_add_service_error
from core.roles import admin_required, reviewer_required
from labeling.models import Campaign
from models_hub import drift_selectors
from models_hub.models import DriftAlert, DriftPolicy
from models_hub.selectors import campaign_reward_model
from models_hub.services import drift

TEMPLATE = "models_hub/drift.html"


class DriftPolicyForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=DriftPolicy._meta.get_field("webhook_url").help_text,
    )

    class Meta:
        model = DriftPolicy
        fields = list(drift.POLICY_FIELDS)


def _page(
    request: HttpRequest,
    campaign: Campaign,
    *,
    form: DriftPolicyForm | None = None,
    status: int = 200,
) -> HttpResponse:
    policy = drift_selectors.drift_policy_for(campaign=campaign)
    series = drift_selectors.drift_series(campaign=campaign)
    latest = [
        (s, next((p for p in reversed(s.points) if p.source == source), None))
        for s in series
        for source in ("golden", "served")
    ]
    return render(
        request,
        TEMPLATE,
        {
            "campaign": campaign,
            "policy": policy,
            "form": form or DriftPolicyForm(instance=policy),
            "charts": drift_selectors.drift_charts(series),
            "latest": [(s, point) for s, point in latest if point is not None],
            "alerts": drift_selectors.drift_alert_list(
                campaign=campaign, open_only=True
            ),
            "resolved": drift_selectors.drift_alert_list(
                campaign=campaign, open_only=False
            )[:20],
            "reward_model": campaign_reward_model(campaign=campaign),
        },
        status=status,
    )


@reviewer_required
@require_GET
def drift_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    return _page(request, get_object_or_404(Campaign, pk=campaign_id))


@admin_required
@require_POST
def drift_policy_view(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Save the thresholds; a refusal shows the page again (400) with the
    errors next to their fields."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = DriftPolicyForm(
        request.POST, instance=drift_selectors.drift_policy_for(campaign=campaign)
    )
    if form.is_valid():
        try:
            drift.drift_policy_update(
                campaign=campaign,
                actor=request.user,
                **{name: form.cleaned_data[name] for name in drift.POLICY_FIELDS},
            )
        except ValidationError as exc:
            form_add_service_error(form, exc)
        else:
            messages.success(request, "Drift watch settings saved.")
            return redirect("models_hub:drift", campaign.pk)
    return _page(request, campaign, form=form, status=400)


@admin_required
@require_POST
def drift_evaluate_view(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        drift.drift_evaluate_request(campaign=campaign, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            "Evaluation queued on the gpu worker; its points appear here when it is done.",
        )
    return redirect("models_hub:drift", campaign.pk)


@reviewer_required
@require_POST
def drift_alert_acknowledge_view(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_object_or_404(DriftAlert, pk=alert_id)
    try:
        drift.drift_alert_acknowledge(alert=alert, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Alert acknowledged.")
    return redirect("models_hub:drift", alert.campaign_id)
