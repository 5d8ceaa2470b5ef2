"""Reviewer pages: the labels browser and its export, a pair with all its
labels, gold marked from the sides as shown, adjudication. GET never
writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.exceptions import ApplicationError
from core.http import redirect_next
from core.roles import reviewer_required
from labeling import selectors
from labeling.models import Campaign, Preference
from labeling.selectors import labels as label_selectors
from labeling.services.quality import (
    comparison_adjudicate,
    comparison_gold_set,
    gold_choice_from_side,
)

LABELS_PER_PAGE = 50


class LabelFilterForm(forms.Form):
    annotator = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Annotator"
    )
    choice = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *Preference.Choice.choices],
        label="Choice",
    )
    agreement = forms.ChoiceField(
        required=False,
        choices=[
            ("", "any"),
            ("agreed", "agreed"),
            ("disagreed", "disagreed"),
            ("single", "single label"),
        ],
        label="Agreement",
    )
    gold = forms.ChoiceField(
        required=False,
        choices=[("", "any"), ("yes", "gold pairs"), ("no", "not gold")],
        label="Gold",
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["annotator"].choices = [
            ("", "anyone"),
            *label_selectors.label_annotators(campaign=campaign),
        ]

    def filters(self) -> label_selectors.LabelFilters:
        data = self.cleaned_data
        return label_selectors.LabelFilters(
            annotator_id=data["annotator"],
            choice=data["choice"],
            agreement=data["agreement"],
            gold={"yes": True, "no": False}.get(data["gold"]),
            since=data["since"],
            until=data["until"],
        )


class LabelExportForm(forms.Form):
    """The training export's options (``PreferenceExportApi``)."""

    tie_policy = forms.ChoiceField(
        required=False,
        choices=[("skip", "skip ties"), ("both_orders", "ties in both orders")],
        label="Ties",
    )
    split = forms.MultipleChoiceField(
        required=False,
        choices=[("train", "train"), ("val", "val"), ("test", "test")],
        widget=forms.CheckboxSelectMultiple,
        label="Splits (none: all)",
    )
    include_golden = forms.BooleanField(required=False, label="Golden prompts too")


def _filters(
    request: HttpRequest, campaign: Campaign
) -> tuple[LabelFilterForm, label_selectors.LabelFilters]:
    form = LabelFilterForm(request.GET, campaign=campaign)
    if form.is_valid():
        return form, form.filters()
    return form, label_selectors.LabelFilters()


@reviewer_required
@require_GET
def campaign_labels(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    form, filters = _filters(request, campaign)
    page = Paginator(
        label_selectors.label_list(campaign=campaign, filters=filters),
        LABELS_PER_PAGE,
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "labeling/labels.html",
        {
            "campaign": campaign,
            "form": form,
            "export_form": LabelExportForm(),
            "page": page,
        },
        status=400 if form.errors else 200,
    )


@reviewer_required
@require_GET
def campaign_labels_export(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The filtered labels as the training export's JSONL rows."""
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    form, filters = _filters(request, campaign)
    options = LabelExportForm(request.GET)
    if form.errors or not options.is_valid():
        messages.error(request, "Fix the filters or export options first.")
        return redirect("labeling:campaign-labels", campaign.pk)
    rows = label_selectors.label_export_rows(
        campaign=campaign,
        filters=filters,
        tie_policy=options.cleaned_data["tie_policy"] or "skip",
        splits=sorted(options.cleaned_data["split"]),
        include_golden=options.cleaned_data["include_golden"],
    )

    def lines() -> Iterator[bytes]:
        for row in rows:
            yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

    response = StreamingHttpResponse(
        lines(), content_type="application/jsonl; charset=utf-8"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="campaign-{campaign.pk}-labels.jsonl"'
    )
    return response


def _pair_context(
    request: HttpRequest, *, campaign_id: int, comparison_id: int, a_on_left: bool
) -> dict[str, Any]:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    comparison = label_selectors.comparison_get_for_review(
        campaign=campaign, comparison_id=comparison_id
    )
    return {
        "campaign": campaign,
        **label_selectors.pair_view(comparison=comparison, a_on_left=a_on_left),
    }


@reviewer_required
@require_GET
def comparison_detail(
    request: HttpRequest, campaign_id: int, comparison_id: int
) -> HttpResponse:
    """A pair, A on the left unless ``?sides=ba``, with all its labels."""
    context = _pair_context(
        request,
        campaign_id=campaign_id,
        comparison_id=comparison_id,
        a_on_left=request.GET.get("sides") != "ba",
    )
    return render(request, "labeling/pair.html", context)


@reviewer_required
@require_POST
def comparison_gold(
    request: HttpRequest, campaign_id: int, comparison_id: int
) -> HttpResponse:
    """Mark (or unmark) a gold pair from the side the reviewer picked on the
    screen they saw (``a_on_left`` says which that was)."""
    a_on_left = request.POST.get("a_on_left") != "0"
    context = _pair_context(
        request,
        campaign_id=campaign_id,
        comparison_id=comparison_id,
        a_on_left=a_on_left,
    )
    comparison = context["comparison"]
    try:
        choice = gold_choice_from_side(
            answer=request.POST.get("answer", ""), a_on_left=a_on_left
        )
        comparison_gold_set(comparison=comparison, choice=choice)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Pair {comparison.pk} is no longer a gold pair."
            if choice is None
            else f"Pair {comparison.pk} is a gold pair: "
            f"{_answer_words(request.POST['answer'])}.",
        )
    if request.htmx:
        context = _pair_context(
            request,
            campaign_id=campaign_id,
            comparison_id=comparison_id,
            a_on_left=a_on_left,
        )
        return render(request, "labeling/partials/_pair_gold.html", context)
    url = reverse("labeling:comparison-detail", args=[campaign_id, comparison_id])
    return redirect(url if a_on_left else f"{url}?sides=ba")


def _answer_words(answer: str) -> str:
    return {
        "left": "the left answer is right",
        "right": "the right answer is right",
        "tie": "a tie",
    }.get(answer, answer)


@reviewer_required
@require_POST
def comparison_adjudicate_view(
    request: HttpRequest, campaign_id: int, comparison_id: int
) -> HttpResponse:
    """Rule on a disputed pair. The form has no default ruling: an untouched
    form records nothing and says so."""
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    comparison = label_selectors.comparison_get_for_review(
        campaign=campaign, comparison_id=comparison_id
    )
    try:
        comparison_adjudicate(
            comparison=comparison,
            reviewer=request.user,
            choice=request.POST.get("choice", ""),
            rationale=request.POST.get("rationale", ""),
            admin_note=request.POST.get("admin_note", ""),
        )
    except ApplicationError as exc:
        messages.error(request, f"Pair {comparison.pk}: {exc.message}")
    else:
        messages.success(request, f"Pair {comparison.pk} adjudicated.")
    return redirect_next(request, "labeling:campaign-quality", campaign.pk)
