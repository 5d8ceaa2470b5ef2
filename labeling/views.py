"""Annotator pages. GET never writes: a lease is taken by POST (the "start"
button, or a submit, which answers with the next pair)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from core.exceptions import ApplicationError
from core.roles import admin_required, reviewer_required
from labeling import selectors
from labeling.exceptions import (
    ComparisonFull,
    ImportFailed,
    LeaseNotFound,
    NothingToLabel,
)
from labeling.forms import CampaignForm, CampaignImportForm, PreferenceForm
from labeling.models import Campaign, Comparison, Lease
from labeling.selectors import campaigns as campaign_selectors
from labeling.selectors import quality as quality_selectors
from labeling.services import campaigns as campaign_services
from labeling.services import queue
from labeling.services.imports import ImportResult, campaign_import_jsonl
from labeling.services.quality import comparison_adjudicate, comparison_gold_set


@require_GET
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaign_list_for_user(user=request.user)
    rows = [
        (c, selectors.annotator_progress(campaign=c, annotator=request.user))
        for c in campaigns
    ]
    return render(request, "labeling/campaign_list.html", {"rows": rows})


# ---------------------------------------------------------------- campaigns (staff)


def _campaign_page(
    request: HttpRequest,
    *,
    campaign: Campaign,
    import_form: CampaignImportForm | None = None,
    import_result: ImportResult | None = None,
    fragment: bool = False,
) -> HttpResponse:
    """The campaign page, or (``fragment``, for htmx) only its import card
    plus the counts, swapped out of band."""
    if import_form is None:
        import_form = CampaignImportForm()
    context = {
        "campaign": campaign,
        "counts": campaign_selectors.campaign_counts(campaign=campaign),
        "import_form": import_form,
        "import_result": import_result,
        "import_summary": _import_summary(import_result) if import_result else "",
        "import_max_bytes": settings.ARBITER_IMPORT_MAX_BYTES,
    }
    template = "labeling/campaign_detail.html"
    if fragment:
        template += "#import-response"
    return render(request, template, context, status=400 if import_form.errors else 200)


@reviewer_required
@require_GET
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    return _campaign_page(request, campaign=campaign)


def _save_campaign(
    request: HttpRequest, form: CampaignForm, campaign: Campaign | None
) -> Campaign | None:
    """Create or update through the services; their errors land on the field
    they name (a taken name, bad criteria) so nothing reaches a 500."""
    try:
        if campaign is None:
            return campaign_services.campaign_create(
                created_by=request.user, **form.cleaned_data
            )
        return campaign_services.campaign_update(
            campaign=campaign, data=form.cleaned_data
        )
    except ValidationError as exc:
        errors = (
            exc.error_dict if hasattr(exc, "error_dict") else {None: exc.error_list}
        )
        for field, field_errors in errors.items():
            form.add_error(field if field in form.fields else None, field_errors)
    except ApplicationError as exc:
        field = exc.extra.get("field")
        form.add_error(field if field in form.fields else None, exc.message)
    return None


@admin_required
@require_http_methods(["GET", "POST"])
def campaign_create(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else None
    form = CampaignForm(data, initial={"status": "active"})
    if request.method == "POST" and form.is_valid():
        campaign = _save_campaign(request, form, None)
        if campaign is not None:
            messages.success(request, f"Campaign {campaign.name} created.")
            return redirect("labeling:campaign-detail", campaign.pk)
    return render(
        request,
        "labeling/campaign_form.html",
        {"form": form, "campaign": None},
        status=400 if form.errors else 200,
    )


@admin_required
@require_http_methods(["GET", "POST"])
def campaign_edit(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    form = CampaignForm(
        request.POST if request.method == "POST" else None,
        initial=CampaignForm.initial_for(campaign),
    )
    if request.method == "POST" and form.is_valid():
        if _save_campaign(request, form, campaign) is not None:
            messages.success(request, "Campaign saved.")
            return redirect("labeling:campaign-detail", campaign.pk)
        # The failed update left its values on the instance; show the saved ones.
        campaign.refresh_from_db()
    return render(
        request,
        "labeling/campaign_form.html",
        {"form": form, "campaign": campaign},
        status=400 if form.errors else 200,
    )


@admin_required
@require_POST
def campaign_import(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Import a JSONL upload with the API's service: all lines or none. A
    plain POST redirects to the campaign page on success; htmx gets the card."""
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    form = CampaignImportForm(request.POST, request.FILES)
    result = None
    if form.is_valid():
        try:
            result = campaign_import_jsonl(
                campaign=campaign, lines=form.cleaned_data["file"]
            )
        except ImportFailed as exc:
            form.add_error(
                "file",
                f"Line {exc.line}, field {exc.field}: {exc.reason}. "
                "Nothing was imported.",
            )
    if result is not None and not request.htmx:
        messages.success(request, _import_summary(result))
        return redirect("labeling:campaign-detail", campaign.pk)
    return _campaign_page(
        request,
        campaign=campaign,
        import_form=form,
        import_result=result,
        fragment=bool(request.htmx),
    )


def _import_summary(result: ImportResult) -> str:
    return (
        f"Imported {result.lines} lines: {result.prompts_created} prompts, "
        f"{result.completions_created} completions and "
        f"{result.comparisons_created} pairs created; "
        f"{result.duplicates_skipped} pairs were already there."
    )


# ---------------------------------------------------------------- labeling


def _posted_answer(request: HttpRequest) -> dict[str, Any]:
    """What the annotator had chosen, to show again when a submit is refused."""
    strength = request.POST.get("strength", "")
    return {
        "choice": request.POST.get("choice", ""),
        "strength": int(strength) if strength.lstrip("-").isdigit() else None,
        "rationale": request.POST.get("rationale", ""),
    }


def _card(
    request: HttpRequest,
    *,
    campaign_id: int,
    lease_id: int | None,
    status: int = 200,
    answer: dict[str, Any] | None = None,
    campaign: Campaign | None = None,
    leased: queue.LeasedPair | None = None,
    footer: selectors.CardFooter | None = None,
) -> HttpResponse:
    """The labeling card: a leased pair to answer, a pair already answered
    (with the label and, while allowed, the form to change it), or "done".
    ``campaign`` (checked by the caller), ``leased`` (a pair just leased,
    so not answered yet) and ``footer`` (the progress, read by the label's
    statement) spare reading them again. The annotator's recent labels are
    read when they open that list (``label_recent``)."""
    if campaign is None:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
    if campaign.mode == Campaign.Mode.RANK:
        # A rank campaign's card lists K answers to order (issue 14 §1).
        from labeling.ranking_views import ranking_card_page

        return ranking_card_page(
            request,
            campaign=campaign,
            lease_id=lease_id,
            lease=leased.lease if leased is not None else None,
            status=status,
        )
    progress = (
        footer
        if footer is not None
        else selectors.annotator_card_progress(
            campaign=campaign, annotator=request.user
        )
    )
    context = {
        "campaign": campaign,
        "progress": progress,
        "pair": None,
        "criterion_fields": _criterion_fields(campaign),
        "request_id": uuid.uuid4().hex,
        "suppress_messages": True,
        "strength_options": list(selectors.STRENGTH_LABELS.items()),
        "answer": answer or {},
    }
    if leased is not None:
        lease_id = leased.lease.pk
        context["pair"] = leased.pair
        context["answered"] = None
        context["skipped"] = context["lease_done"] = False
    elif lease_id is not None:
        lease = selectors.lease_get_for_annotator(
            annotator=request.user, lease_id=lease_id
        )
        context["pair"] = selectors.lease_blind_pair(lease=lease)
        answered = selectors.preference_for_lease(lease=lease)
        context["answered"] = answered
        context["skipped"] = answered is None and lease.status == Lease.Status.SKIPPED
        context["lease_done"] = context["skipped"] or (
            answered is not None and answered.refusal is not None
        )
        if answered is not None and answer is None:
            context["answer"] = {
                "choice": answered.choice,
                "strength": answered.strength,
                "rationale": answered.rationale,
            }
    template = (
        "labeling/label.html#comparison-card" if request.htmx else "labeling/label.html"
    )
    response = render(request, template, context, status=status)
    if request.htmx:
        url = (
            reverse("labeling:lease-detail", args=[campaign.pk, lease_id])
            if lease_id
            else reverse("labeling:label-done", args=[campaign.pk])
        )
        response["HX-Push-Url"] = url
    return response


def _criterion_fields(campaign: Campaign) -> list[Any]:
    """The card's select per criterion of the campaign; a campaign without
    criteria (most) builds no form."""
    if not campaign.criteria:
        return []
    form = PreferenceForm(campaign=campaign)
    return [form[f"criterion__{name}"] for name in form.criteria_names]


def _next(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_annotator(
        user=request.user, campaign_id=campaign_id
    )
    try:
        leased = queue.comparison_lease_next_pair(
            campaign=campaign, annotator=request.user
        )
    except NothingToLabel:
        leased = None
    return _next_card(request, campaign=campaign, leased=leased)


def _next_card(
    request: HttpRequest,
    *,
    campaign: Campaign,
    leased: queue.LeasedPair | None,
    footer: selectors.CardFooter | None = None,
) -> HttpResponse:
    """htmx: the card of the pair just leased (or "done"); a plain post is
    redirected to its page."""
    if leased is None:
        if request.htmx:
            return _card(
                request, campaign_id=campaign.pk, lease_id=None, campaign=campaign
            )
        return redirect("labeling:label-done", campaign.pk)
    if request.htmx:
        return _card(
            request,
            campaign_id=campaign.pk,
            lease_id=leased.lease.pk,
            campaign=campaign,
            leased=leased,
            footer=footer,
        )
    return redirect("labeling:lease-detail", campaign.pk, leased.lease.pk)


@require_http_methods(["GET", "POST"])
def label_start(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """GET: the campaign's start page (a bookmark or a reload lands here);
    POST: lease the next pair."""
    if request.method == "POST":
        return _next(request, campaign_id)
    campaign = selectors.campaign_get_for_annotator(
        user=request.user, campaign_id=campaign_id
    )
    progress = selectors.annotator_progress(campaign=campaign, annotator=request.user)
    return render(
        request,
        "labeling/label_start.html",
        {"campaign": campaign, "progress": progress},
    )


@require_GET
def lease_detail(request: HttpRequest, campaign_id: int, lease_id: int) -> HttpResponse:
    return _card(request, campaign_id=campaign_id, lease_id=lease_id)


@require_GET
def label_done(request: HttpRequest, campaign_id: int) -> HttpResponse:
    return _card(request, campaign_id=campaign_id, lease_id=None)


@require_GET
def label_recent(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The annotator's latest labels in the campaign, each linking back to
    its pair: the card's "Your recent labels", fetched when it is opened
    (most cards are answered without opening it, so the label does not pay
    for it); a page of its own without htmx."""
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    context = {
        "campaign": campaign,
        "recent": selectors.annotator_recent_labels(
            campaign=campaign, annotator=request.user
        ),
    }
    template = (
        "labeling/label.html#recent-labels"
        if request.htmx
        else "labeling/recent_labels.html"
    )
    return render(request, template, context)


@require_POST
def lease_submit(request: HttpRequest, campaign_id: int, lease_id: int) -> HttpResponse:
    # The lease, not the campaign's status, lets its annotator answer: a pair
    # leased before an admin paused or archived the campaign is still
    # recorded (nothing submitted is lost), and no new pair follows. A label
    # reads its campaign in the statement that locks the pair (the lease
    # must be this campaign's, and posted criteria its criteria).
    form = PreferenceForm(request.POST)
    if not form.is_valid():
        _lease_campaign(request, campaign_id, lease_id)  # 404 unless theirs
        messages.error(
            request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        )
        return _card(
            request,
            campaign_id=campaign_id,
            lease_id=lease_id,
            status=400 if request.htmx else 200,
        )
    campaign: Campaign | None = None
    try:
        if form.cleaned_data["intent"] == "skip":
            campaign = _lease_campaign(request, campaign_id, lease_id)
            queue.lease_skip(lease_id=lease_id, annotator=request.user)
        else:
            # revise: an annotator who went back and answered differently
            # changes the label (within the campaign's window) instead of
            # having the new answer silently dropped. The next pair is
            # leased in the same transaction (one round trip per label).
            outcome = queue.preference_record_and_lease_next(
                lease_id=lease_id,
                annotator=request.user,
                revise=True,
                campaign_id=campaign_id,
                card_footer=bool(request.htmx),
                **form.preference_kwargs(),
            )
            result = outcome.record
            if result.revised:
                label = selectors.SCREEN_CHOICE_LABELS[form.cleaned_data["choice"]]
                messages.success(
                    request,
                    f"Label changed to “{label}” (version {result.preference.version};"
                    " the earlier answer is kept in the history).",
                )
            if outcome.no_next != "closed":
                return _next_card(
                    request,
                    campaign=outcome.campaign,
                    leased=outcome.next,
                    footer=outcome.card_footer,
                )
            campaign = outcome.campaign
    except ComparisonFull as exc:
        messages.info(request, exc.message)
    except LeaseNotFound:
        raise  # not theirs, or not this campaign's: 404, as for a page
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _card(
            request,
            campaign_id=campaign_id,
            lease_id=lease_id,
            status=400 if request.htmx else 200,
            answer=_posted_answer(request),
        )
    if campaign is None:
        campaign = _lease_campaign(request, campaign_id, lease_id)
    if campaign.status != Campaign.Status.ACTIVE:
        return _campaign_closed(request, campaign)
    return _next(request, campaign_id)


def _lease_campaign(request: HttpRequest, campaign_id: int, lease_id: int) -> Campaign:
    """The campaign of the user's lease ``lease_id``, which must be
    ``campaign_id``."""
    campaign = selectors.lease_campaign_for_annotator(
        annotator=request.user, lease_id=lease_id
    )
    if campaign.pk != campaign_id:
        raise LeaseNotFound("That pair is not assigned to you.")
    return campaign


def _campaign_closed(request: HttpRequest, campaign: Campaign) -> HttpResponse:
    """After a late submit to a paused or archived campaign: back to the
    campaign list, saying the submit was kept and no pair follows."""
    messages.info(
        request,
        f"“{campaign.name}” is {campaign.get_status_display()}: what you just"
        " submitted is saved, and it has no more pairs for now.",
    )
    url = reverse("labeling:campaign-list")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# ---------------------------------------------------------------- quality (reviewers)


@reviewer_required
@require_GET
def campaign_quality(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    report = quality_selectors.quality_report_cached(campaign=campaign)
    payload = report.payload or {}
    context = {
        "campaign": campaign,
        "stats": quality_selectors.quality_page_counts(campaign=campaign),
        "report": report,
        "agreement": payload.get("agreement"),
        "annotators": payload.get("annotators", []),
        "disagreements": quality_selectors.disagreements(
            campaign=campaign, limit=20, among=payload.get("disagreement_ids", [])
        ),
    }
    if campaign.mode == Campaign.Mode.RANK:
        from labeling.ranking_views import ranking_quality_context

        context |= ranking_quality_context(
            campaign=campaign, figures=payload.get("ranking")
        )
    return render(request, "labeling/quality.html", context)


@reviewer_required
@require_GET
def annotator_detail(
    request: HttpRequest, campaign_id: int, annotator_id: int
) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    row = next(
        (
            r
            for r in quality_selectors.annotator_report(campaign=campaign)
            if r["annotator_id"] == annotator_id
        ),
        None,
    )
    if row is None:
        raise Http404("This annotator has no labels in this campaign.")
    timeline = quality_selectors.annotator_timeline(
        campaign=campaign, annotator_id=annotator_id
    )
    return render(
        request,
        "labeling/annotator.html",
        {
            "campaign": campaign,
            "row": row,
            "timeline": timeline,
            "chart": quality_selectors.annotator_daily_chart(timeline=timeline),
        },
    )


@reviewer_required
@require_POST
def comparison_review(
    request: HttpRequest, campaign_id: int, comparison_id: int
) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    comparison = get_object_or_404(Comparison, pk=comparison_id, campaign=campaign)
    try:
        if request.POST.get("action") == "gold":
            comparison_gold_set(
                comparison=comparison, choice=request.POST.get("choice") or None
            )
            messages.success(request, f"Pair {comparison.pk} is now a gold pair.")
        else:
            comparison_adjudicate(
                comparison=comparison,
                reviewer=request.user,
                choice=request.POST.get("choice", ""),
                rationale=request.POST.get("rationale", ""),
            )
            messages.success(request, f"Pair {comparison.pk} adjudicated.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("labeling:campaign-quality", campaign.pk)
