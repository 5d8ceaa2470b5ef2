"""A live conversation in real Chromium, answered by the real gpu worker on a
tiny random Llama: the page shows each answer as it is streamed, the keyboard
picks, the chosen answer joins the thread, and the conversation ends at its
turn limit of two."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from core.roles import ANNOTATOR
from labeling.models import ConversationTurn, Preference
from labeling.services.conversations import conversation_settings_update
from models_hub.models import BaseModelVersion
from tests.browser.conftest import CHROMIUM
from tests.browser.test_labeling_ui import login_with_cookie
from tests.labeling.factories import CampaignFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CONVERSATION_URL = re.compile(r"/campaigns/\d+/conversations/(\d+)/$")

# Written as functions: the Content-Security-Policy refuses eval'd expressions.
STREAMING = """() => {
  const turn = document.querySelector('#conversation-turn[data-turn-status="generating"]');
  return !!turn && [...turn.querySelectorAll('[data-answer]')]
    .some((e) => e.textContent.trim().length > 0);
}"""
ANSWER_TEXTS = """() => [...document.querySelectorAll('#conversation-turn [data-answer]')]
  .map((e) => e.textContent.trim())"""


def _send(page: Any, text: str) -> None:
    box = page.get_by_label(re.compile("Your message"))
    box.fill(text)
    box.press("Control+Enter")


def test_a_live_conversation_of_two_turns_with_streamed_answers(
    celery_workers: dict[str, Any],
    tiny_base: BaseModelVersion,
    make_user: Any,
    new_context: Any,
    live_server: Any,
) -> None:
    """Start a conversation, write a message: the page polls while the
    worker writes, showing the first answer as it was streamed while the
    second is not written yet; both answers then come with the choice
    buttons, key 1 picks, the picked answer joins the thread, and a second
    turn ends the conversation at its limit of two. Two preferences are
    recorded, on prompts of one and three messages."""
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory(name="Chat campaign")
    conversation_settings_update(
        campaign=campaign,
        data={"live_enabled": True, "turn_limit": 2, "max_new_tokens": 48},
    )
    context = new_context()
    login_with_cookie(context, live_server, annotator.username)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto("/")
    page.get_by_role("link", name="Live conversations").click()
    page.get_by_role("button", name="Start a conversation").click()
    page.wait_for_url(CONVERSATION_URL)
    conversation_id = int(CONVERSATION_URL.search(page.url).group(1))

    # Hold the worker after its first streamed answer: while this
    # transaction locks the base model's row, the worker streams answer A
    # into the turn and then waits to store it (a completion's foreign key
    # to its base model is checked under a key-share lock), so the page
    # shows a half-written turn however fast the tiny model is.
    with transaction.atomic():
        BaseModelVersion.objects.select_for_update().get(pk=tiny_base.pk)
        _send(page, "tell me about the cat .")
        page.wait_for_function(STREAMING, timeout=90_000)
        texts = page.evaluate(ANSWER_TEXTS)
        assert sorted(bool(t) for t in texts) == [False, True]
        assert page.locator("[data-progress]").is_visible()
        assert page.locator("#conversation-choose").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "conversation-streaming.png"))

    page.locator("#conversation-choose").wait_for(timeout=60_000)
    assert all(page.evaluate(ANSWER_TEXTS))
    page.screenshot(path=str(SCREENSHOTS / "conversation-choose.png"))
    left_text = page.locator('[data-answer="left"]').inner_text().strip()
    page.locator("#conversation-body").focus()
    page.keyboard.press("1")

    page.locator("[data-thread] .turn-assistant").wait_for()
    assert page.locator(
        "[data-thread] .turn-assistant .answer"
    ).inner_text().strip() == (left_text)
    _send(page, "and the dog ?")
    page.locator("#conversation-choose").wait_for(timeout=60_000)
    page.locator("#conversation-body").focus()
    page.keyboard.press("2")
    page.locator("[data-finished]").wait_for()
    assert page.locator("[data-thread] .turn-user").count() == 2
    assert page.locator("#conversation-send").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "conversation-finished.png"), full_page=True)

    turns = list(
        ConversationTurn.objects.filter(conversation_id=conversation_id).order_by(
            "number"
        )
    )
    assert [t.status for t in turns] == ["answered", "answered"]
    assert sum(t.partial_writes for t in turns) > 0
    preferences = Preference.objects.filter(annotator=annotator).order_by("id")
    assert [len(p.comparison.prompt.messages) for p in preferences] == [1, 3]
    assert preferences[1].comparison.prompt.messages[1]["content"] == (
        turns[0].chosen.text
    )
    assert errors == []

    # axe-core (injected by evaluate, which the strict CSP refuses: a context
    # that bypasses it) finds no serious or critical violation, here or on
    # the list of conversations, on a desktop or a phone.
    from tests.browser.test_accessibility import PHONE, _blocking_violations

    found = []
    for viewport in (None, PHONE):
        extra = {"viewport": viewport} if viewport else {}
        axe_context = new_context(bypass_csp=True, **extra)
        login_with_cookie(axe_context, live_server, annotator.username)
        axe_page = axe_context.new_page()
        for url in (page.url, f"/campaigns/{campaign.pk}/conversations/"):
            axe_page.goto(url)
            found += _blocking_violations(axe_page, f"{viewport} {url}")
    assert found == []
