"""Live-conversation pages (htmx). The annotator writes, two hidden versions
answer on the gpu worker, the page polls the turn every half second while
the answers are written, the annotator picks, the thread goes on. GET never
writes; every step is a POST that answers with the conversation fragment
(htmx) or redirects to the page (plain form posts)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from core.exceptions import ApplicationError
from core.roles import admin_required, is_admin
from labeling import selectors
from labeling.forms import PreferenceForm
from labeling.models import Campaign, Conversation, ConversationSettings
from labeling.selectors import conversations as conversation_selectors
from labeling.services import conversations as conversation_services

PAGE = "labeling/conversation.html"


class ConversationSettingsForm(forms.ModelForm):
    class Meta:
        model = ConversationSettings
        fields = ["live_enabled", "turn_limit", "versions", "max_new_tokens"]


class MessageForm(forms.Form):
    text = forms.CharField(
        max_length=conversation_services.MESSAGE_MAX_CHARS, strip=True
    )


def _campaign(request: HttpRequest, campaign_id: int) -> Campaign:
    return selectors.campaign_get_for_annotator(
        user=request.user, campaign_id=campaign_id
    )


def _conversation(
    request: HttpRequest, campaign_id: int, conversation_id: int
) -> Conversation:
    return conversation_selectors.conversation_get_for_annotator(
        annotator=request.user,
        conversation_id=conversation_id,
        campaign_id=campaign_id,
    )


def _page(
    request: HttpRequest,
    conversation: Conversation,
    *,
    status: int = 200,
    fragment: str = "conversation-body",
    text: str = "",
    view: conversation_selectors.ConversationView | None = None,
) -> HttpResponse:
    campaign = conversation.campaign
    context: dict[str, Any] = {
        "campaign": campaign,
        "view": view
        or conversation_selectors.conversation_view(conversation=conversation),
        "strength_options": list(selectors.STRENGTH_LABELS.items()),
        "form": PreferenceForm(campaign=campaign),
        "text": text,
        "suppress_messages": True,
    }
    template = f"{PAGE}#{fragment}" if request.htmx else PAGE
    return render(request, template, context, status=status)


def _after_post(
    request: HttpRequest, conversation: Conversation, **kwargs: Any
) -> HttpResponse:
    if request.htmx:
        return _page(request, conversation, **kwargs)
    return redirect(
        "labeling:conversation-detail", conversation.campaign_id, conversation.pk
    )


@require_GET
def conversation_list(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign(request, campaign_id)
    row = conversation_selectors.conversation_settings_get(campaign=campaign)
    context = {
        "campaign": campaign,
        "settings_row": row,
        "conversations": conversation_selectors.conversation_list_summary(
            campaign=campaign, annotator=request.user
        ),
        "settings_form": ConversationSettingsForm(instance=row)
        if is_admin(request.user)
        else None,
    }
    return render(request, "labeling/conversation_list.html", context)


@admin_required
@require_POST
def conversation_settings_save(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = selectors.campaign_get_for_user(
        user=request.user, campaign_id=campaign_id
    )
    form = ConversationSettingsForm(request.POST)
    if form.is_valid():
        try:
            conversation_services.conversation_settings_update(
                campaign=campaign, data=form.cleaned_data
            )
            messages.success(request, "Conversation settings saved.")
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
    else:
        messages.error(
            request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        )
    return redirect("labeling:conversation-list", campaign.pk)


@require_POST
def conversation_new(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign(request, campaign_id)
    try:
        conversation = conversation_services.conversation_start(
            campaign=campaign, annotator=request.user
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("labeling:conversation-list", campaign.pk)
    url = reverse("labeling:conversation-detail", args=[campaign.pk, conversation.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def conversation_detail(
    request: HttpRequest, campaign_id: int, conversation_id: int
) -> HttpResponse:
    return _page(request, _conversation(request, campaign_id, conversation_id))


@require_GET
def conversation_turn(
    request: HttpRequest, campaign_id: int, conversation_id: int, number: int
) -> HttpResponse:
    """The current turn's fragment, polled while its answers are written."""
    conversation = _conversation(request, campaign_id, conversation_id)
    if not request.htmx:
        return redirect("labeling:conversation-detail", campaign_id, conversation_id)
    view = conversation_selectors.conversation_last_turn_view(conversation=conversation)
    if view.current is not None and view.current.number == number:
        return _page(request, conversation, fragment="conversation-turn", view=view)
    # The turn moved on (answered in another tab): refresh the whole thread.
    response = _page(request, conversation)
    response["HX-Retarget"] = "#conversation-body"
    return response


@require_POST
def conversation_send(
    request: HttpRequest, campaign_id: int, conversation_id: int
) -> HttpResponse:
    conversation = _conversation(request, campaign_id, conversation_id)
    form = MessageForm(request.POST)
    text = request.POST.get("text", "")
    try:
        if not form.is_valid():
            raise conversation_services.ConversationError(
                " ".join(form.errors.get("text", ["Write a message first."]))
            )
        conversation_services.conversation_message_send(
            conversation=conversation, text=form.cleaned_data["text"]
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _after_post(request, conversation, status=400, text=text)
    return _after_post(request, conversation)


@require_POST
def conversation_choose(
    request: HttpRequest, campaign_id: int, conversation_id: int, number: int
) -> HttpResponse:
    conversation = _conversation(request, campaign_id, conversation_id)
    turn = conversation_selectors.conversation_turn_get(
        conversation=conversation, number=number
    )
    form = PreferenceForm(request.POST, campaign=conversation.campaign)
    try:
        if not form.is_valid() or form.cleaned_data["intent"] != "label":
            raise conversation_services.ConversationError(
                "Pick left, right, tie or both bad."
            )
        data = form.preference_kwargs()
        conversation_services.conversation_turn_choose(
            turn=turn,
            annotator=request.user,
            choice=data["choice"],
            strength=data["strength"],
            rationale=data["rationale"],
            time_spent_ms=data["time_spent_ms"],
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _after_post(request, conversation, status=400)
    conversation.refresh_from_db(fields=["status"])
    return _after_post(request, conversation)


@require_POST
def conversation_retry(
    request: HttpRequest, campaign_id: int, conversation_id: int, number: int
) -> HttpResponse:
    conversation = _conversation(request, campaign_id, conversation_id)
    turn = conversation_selectors.conversation_turn_get(
        conversation=conversation, number=number
    )
    try:
        conversation_services.conversation_turn_retry(turn=turn)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _after_post(request, conversation)


@require_POST
def conversation_finish(
    request: HttpRequest, campaign_id: int, conversation_id: int
) -> HttpResponse:
    conversation = _conversation(request, campaign_id, conversation_id)
    conversation_services.conversation_finish(conversation=conversation)
    conversation.refresh_from_db(fields=["status"])
    return _after_post(request, conversation)
