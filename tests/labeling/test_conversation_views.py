"""Conversation pages through Django's test client (no worker: a turn's
answers are stored here as the worker would store them; the worker itself is
tested in test_conversations.py), and imported chat prompts shown as a
thread on the labeling card."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import (
    Conversation,
    ConversationSettings,
    ConversationTurn,
    Preference,
)
from labeling.services.conversations import (
    conversation_settings_update,
    conversation_start,
)
from labeling.services.imports import campaign_import_jsonl
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, CompletionFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _live_campaign() -> Any:
    campaign = CampaignFactory()
    conversation_settings_update(
        campaign=campaign, data={"live_enabled": True, "turn_limit": 2}
    )
    return campaign


def _answers_written(turn: ConversationTurn) -> None:
    """Store the two answers as the gpu worker does when it is done."""
    a = CompletionFactory(prompt=turn.prompt, text="**Bold** answer A")
    b = CompletionFactory(prompt=turn.prompt, text="answer B <script>x()</script>")
    ConversationTurn.objects.filter(pk=turn.pk).update(
        status="ready", completion_a=a, completion_b=b, text_a=a.text, text_b=b.text
    )


def test_imported_chat_prompt_is_shown_as_a_sanitised_thread_on_the_card(
    make_user: Any,
) -> None:
    """An imported chat prompt is the card's conversation: each message with
    its role, Markdown rendered and raw HTML escaped as in completions, and
    a note that the two answers are the assistant's next turn."""
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    line = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi **there**"},
            {"role": "assistant", "content": "Hello! <img src=x onerror=alert(1)>"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        "completions": ["Why did the cat sit?", "No."],
    }
    campaign_import_jsonl(campaign=campaign, lines=[json.dumps(line)])
    client = _client(annotator)
    response = client.post(reverse("labeling:label-start", args=[campaign.pk]))
    page = client.get(response["Location"]).content.decode()
    assert page.count('data-chat-turn="user"') == 2
    assert 'data-chat-turn="system"' in page and 'data-chat-turn="assistant"' in page
    assert "Hi <strong>there</strong>" in page
    assert "<img" not in page and "&lt;img" in page
    assert "the assistant&#x27;s next turn" in page or "assistant's next turn" in page


def test_live_conversation_pages_send_poll_pick_and_finish(
    make_user: Any, django_assert_num_queries: Any
) -> None:
    """Start (POST) opens the conversation page; a message starts turn 1 and
    the fragment polls the turn while it waits; once written, the turn shows
    both answers (sanitised) and the choice buttons; a pick records the
    preference, puts the picked answer in the thread and offers the next
    message; at the turn limit the conversation is finished."""
    annotator = make_user(ANNOTATOR)
    campaign = _live_campaign()
    client = _client(annotator)
    listing = client.get(reverse("labeling:conversation-list", args=[campaign.pk]))
    assert listing.status_code == 200 and b"Start a conversation" in listing.content
    response = client.post(reverse("labeling:conversation-new", args=[campaign.pk]))
    conversation = Conversation.objects.get(annotator=annotator)
    detail = reverse(
        "labeling:conversation-detail", args=[campaign.pk, conversation.pk]
    )
    assert response["Location"] == detail

    send = reverse("labeling:conversation-send", args=[campaign.pk, conversation.pk])
    empty = client.post(send, {"text": "  "}, **HTMX)
    assert empty.status_code == 400 and not conversation.turns.exists()
    sent = client.post(send, {"text": "Hello *you*"}, **HTMX)
    assert sent.status_code == 200
    html = sent.content.decode()
    turn_url = reverse(
        "labeling:conversation-turn", args=[campaign.pk, conversation.pk, 1]
    )
    assert f'hx-get="{turn_url}"' in html and 'hx-trigger="load delay:500ms"' in html
    assert "Waiting for a worker" in html and "conversation-send" not in html
    turn = conversation.turns.get()
    assert turn.prompt.messages == [{"role": "user", "content": "Hello *you*"}]

    ConversationTurn.objects.filter(pk=turn.pk).update(
        status="generating", writing="a", text_a="half an ans"
    )
    # A poll every half second: the conversation and its last turn (the
    # session and its user come from Redis, core.sessions and core.auth).
    with django_assert_num_queries(2):
        polled = client.get(turn_url, **HTMX).content.decode()
    assert "half an ans" in polled and "hx-trigger" in polled
    assert "conversation-choose" not in polled

    _answers_written(turn)
    ready = client.get(turn_url, **HTMX).content.decode()
    assert "hx-trigger" not in ready and 'id="conversation-choose"' in ready
    assert "<strong>Bold</strong>" in ready and "<script>" not in ready

    choose = reverse(
        "labeling:conversation-choose", args=[campaign.pk, conversation.pk, 1]
    )
    picked = client.post(choose, {"choice": "left", "rationale": "clearer"}, **HTMX)
    assert picked.status_code == 200
    turn.refresh_from_db()
    left = turn.completion_a if turn.a_on_left else turn.completion_b
    assert turn.status == "answered" and turn.chosen_id == left.pk
    preference = Preference.objects.get(annotator=annotator)
    assert preference.rationale == "clearer"
    assert preference.choice == ("a" if turn.a_on_left else "b")
    body = picked.content.decode()
    assert "you picked the left answer (clearer)" in body
    assert 'id="conversation-send"' in body and "turn 2 of 2" in body

    client.post(send, {"text": "More"}, **HTMX)
    second = conversation.turns.get(number=2)
    assert len(second.prompt.messages) == 3
    _answers_written(second)
    done = client.post(
        reverse("labeling:conversation-choose", args=[campaign.pk, conversation.pk, 2]),
        {"choice": "tie"},
        **HTMX,
    ).content.decode()
    assert "Conversation finished" in done and "conversation-send" not in done
    conversation.refresh_from_db()
    assert conversation.status == "finished"
    assert Preference.objects.filter(annotator=annotator).count() == 2
    # A reviewer reads turn 2's pair with the conversation before it.
    second.refresh_from_db()
    review = _client(make_user(REVIEWER)).get(
        reverse("labeling:comparison-detail", args=[campaign.pk, second.comparison_id])
    )
    page = review.content.decode()
    assert page.count('data-chat-turn="user"') == 2
    assert page.count('data-chat-turn="assistant"') == 1
    assert "Hello <em>you</em>" in page


def test_failed_and_stalled_turns_offer_a_retry(make_user: Any) -> None:
    """A failed turn shows the worker's message and a retry button; a retry
    queues a new attempt and keeps the message. A turn nobody touched for a
    minute says so and may be retried too; a fresh one may not."""
    annotator = make_user(ANNOTATOR)
    campaign = _live_campaign()
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    client = _client(annotator)
    client.post(
        reverse("labeling:conversation-send", args=[campaign.pk, conversation.pk]),
        {"text": "Hi"},
        **HTMX,
    )
    turn = conversation.turns.get()
    retry = reverse(
        "labeling:conversation-retry", args=[campaign.pk, conversation.pk, 1]
    )
    refused = client.post(retry, **HTMX)
    assert b"nothing to retry" in refused.content
    turn.refresh_from_db()
    assert turn.attempt == 1

    ConversationTurn.objects.filter(pk=turn.pk).update(
        status="failed",
        error="The answers could not be written (OSError: gone). Your "
        "conversation so far is kept: retry this turn.",
    )
    detail = reverse(
        "labeling:conversation-detail", args=[campaign.pk, conversation.pk]
    )
    page = client.get(detail).content.decode()
    assert "OSError: gone" in page and "Retry this turn" in page
    client.post(retry, **HTMX)
    turn.refresh_from_db()
    assert (turn.status, turn.attempt, turn.error) == ("queued", 2, "")
    assert turn.user_message == "Hi"

    ConversationTurn.objects.filter(pk=turn.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    stalled = client.get(detail).content.decode()
    assert "much longer than usual" in stalled and "Retry this turn" in stalled
    client.post(retry, **HTMX)
    turn.refresh_from_db()
    assert turn.attempt == 3


def test_conversations_are_private_and_settings_are_for_admins(make_user: Any) -> None:
    """Another annotator gets 404 for someone's conversation and cannot pick
    in it; only admins change a campaign's conversation settings, and a bad
    value changes nothing."""
    owner, other, admin = make_user(ANNOTATOR), make_user(ANNOTATOR), make_user(ADMIN)
    campaign = _live_campaign()
    conversation = conversation_start(campaign=campaign, annotator=owner)
    detail = reverse(
        "labeling:conversation-detail", args=[campaign.pk, conversation.pk]
    )
    assert _client(other).get(detail).status_code == 404
    assert (
        _client(other)
        .post(
            reverse("labeling:conversation-send", args=[campaign.pk, conversation.pk]),
            {"text": "hijack"},
        )
        .status_code
        == 404
    )
    assert not conversation.turns.exists()

    settings_url = reverse("labeling:conversation-settings", args=[campaign.pk])
    data = {"turn_limit": 4, "versions": "candidate_champion", "max_new_tokens": 64}
    assert _client(owner).post(settings_url, data).status_code == 403
    _client(admin).post(settings_url, {**data, "turn_limit": 99})
    row = ConversationSettings.objects.get(campaign=campaign)
    assert row.turn_limit == 2
    _client(admin).post(settings_url, {**data, "live_enabled": "on"})
    row.refresh_from_db()
    assert (row.turn_limit, row.versions, row.max_new_tokens, row.live_enabled) == (
        4,
        "candidate_champion",
        64,
        True,
    )
    # The running conversation keeps the limit it started with.
    conversation.refresh_from_db()
    assert conversation.turn_limit == 2
