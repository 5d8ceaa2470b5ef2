"""The live-conversation API: a turn driven end to end through REST with the
real gpu worker, and its refusals (4xx with a reason, nothing changed)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.urls import reverse

from core.roles import ANNOTATOR
from labeling.models import ConversationTurn, Preference
from labeling.services.conversations import conversation_settings_update
from models_hub.models import BaseModelVersion
from tests.labeling.factories import CampaignFactory


def _live_campaign(turn_limit: int = 2) -> Any:
    campaign = CampaignFactory()
    conversation_settings_update(
        campaign=campaign,
        data={"live_enabled": True, "turn_limit": turn_limit, "max_new_tokens": 16},
    )
    return campaign


@pytest.mark.django_db(transaction=True)
def test_a_turn_through_the_api_with_the_real_worker(
    celery_workers: dict[str, Any],
    tiny_base: BaseModelVersion,
    make_user: Any,
    api_client_for: Any,
) -> None:
    """POST a conversation, POST a message (202, the turn queued), poll GET
    until both answers are written, POST the pick: the preference is
    recorded and the picked answer is the conversation's second message."""
    annotator = make_user(ANNOTATOR)
    api = api_client_for(annotator)
    campaign = _live_campaign()
    created = api.post(
        reverse("api-conversation-create", args=[campaign.pk]), format="json"
    )
    assert created.status_code == 201, created.data
    conversation_id = created.data["id"]
    assert created.data["can_send"] and created.data["turns"] == []
    sent = api.post(
        reverse("api-conversation-message", args=[conversation_id]),
        {"text": "tell me about the river ."},
        format="json",
    )
    assert sent.status_code == 202
    # The live worker may claim the turn before the response is read.
    assert sent.data["turns"][0]["status"] in ("queued", "generating")
    assert not sent.data["can_send"]
    again = api.post(
        reverse("api-conversation-message", args=[conversation_id]),
        {"text": "too soon"},
        format="json",
    )
    assert again.status_code == 409 and "Pick an answer" in again.data["detail"]

    detail = reverse("api-conversation-detail", args=[conversation_id])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        turn = api.get(detail).data["turns"][0]
        if turn["status"] not in ("queued", "generating"):
            break
        time.sleep(0.2)
    assert turn["status"] == "ready", turn
    assert turn["left"] and turn["right"] and turn["writing"] == ""

    picked = api.post(
        reverse("api-conversation-choice", args=[conversation_id, 1]),
        {"choice": "right", "strength": 2, "rationale": "better"},
        format="json",
    )
    assert picked.status_code == 200, picked.data
    answered = picked.data["turns"][0]
    assert answered["status"] == "answered" and answered["choice"] == "right"
    assert answered["chosen"] == turn["right"]
    assert picked.data["messages"] == [
        {"role": "user", "content": "tell me about the river ."},
        {"role": "assistant", "content": turn["right"]},
    ]
    preference = Preference.objects.get(annotator=annotator)
    assert preference.rationale == "better"
    assert abs(preference.strength) == 2


@pytest.mark.django_db
def test_the_api_refuses_with_a_reason_and_changes_nothing(
    make_user: Any, api_client_for: Any
) -> None:
    """Conversations off: 400. An empty message: 400. A pick before the
    answers: 409. A retry of a queued turn: 409. Someone else's
    conversation: 404. None of them writes."""
    owner, other = make_user(ANNOTATOR), make_user(ANNOTATOR)
    api = api_client_for(owner)
    off = CampaignFactory()
    response = api.post(reverse("api-conversation-create", args=[off.pk]))
    assert response.status_code == 400 and "off" in response.data["detail"]

    campaign = _live_campaign()
    conversation_id = api.post(
        reverse("api-conversation-create", args=[campaign.pk])
    ).data["id"]
    message = reverse("api-conversation-message", args=[conversation_id])
    assert api.post(message, {"text": "  "}, format="json").status_code == 400
    assert not ConversationTurn.objects.exists()
    assert api.post(message, {"text": "Hi"}, format="json").status_code == 202
    choice = reverse("api-conversation-choice", args=[conversation_id, 1])
    early = api.post(choice, {"choice": "left"}, format="json")
    assert (
        early.status_code == 409
        and "pick once both are written" in early.data["detail"]
    )
    bad = api.post(choice, {"choice": "up"}, format="json")
    assert bad.status_code == 400 and "choice" in bad.data
    retry = api.post(reverse("api-conversation-retry", args=[conversation_id, 1]))
    assert retry.status_code == 409
    stranger = api_client_for(other)
    assert (
        stranger.get(reverse("api-conversation-detail", args=[conversation_id]))
    ).status_code == 404
    assert stranger.post(message, {"text": "x"}, format="json").status_code == 404
    assert ConversationTurn.objects.count() == 1
    assert ConversationTurn.objects.get().attempt == 1
    assert not Preference.objects.exists()
