"""The ranking card in a real browser (system Chromium through Playwright):
K answers ordered by keyboard only and by drag, ties and "none is
acceptable", each ranking checked in the database; screenshots in
``docs/screenshots``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from core.roles import ANNOTATOR
from labeling.models import Campaign, Lease, Ranking
from labeling.services.ranking import ranked_comparison_create
from tests.browser.conftest import CHROMIUM
from tests.browser.test_accessibility import _blocking_violations
from tests.browser.test_labeling_ui import login_with_cookie, start_labeling
from tests.labeling.factories import CampaignFactory, CompletionFactory, PromptFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"browser tests need the system Chromium at {CHROMIUM}",
    ),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

PROMPT = "How do I read a large CSV file in Python without running out of memory?"
ANSWERS = [
    "Use `pandas.read_csv(path, chunksize=100_000)` and process each chunk.",
    "Read it all with `open(path).read()` and split the lines.",
    "Iterate over `csv.reader(f)`: it streams one row at a time.\n\n"
    "```python\nwith open(path, newline='') as f:\n    for row in csv.reader(f):\n"
    "        handle(row)\n```",
    "Buy more RAM.",
]


def make_rank_campaign(n: int, *, k: int = 4, name: str = "Rank answers") -> Campaign:
    campaign = CampaignFactory(
        name=name,
        mode=Campaign.Mode.RANK,
        guidelines="Put the **most useful** answer first. Equal answers may tie.",
    )
    for i in range(n):
        prompt = PromptFactory(
            campaign=campaign, **({"text": PROMPT} if i == 0 else {})
        )
        texts = ANSWERS[:k] if i == 0 else [f"Answer {j} to {i}." for j in range(k)]
        completions = [CompletionFactory(prompt=prompt, text=t) for t in texts]
        ranked_comparison_create(
            campaign=campaign, prompt=prompt, completions=completions, priority=n - i
        )
    return campaign


# A point on an answer's card outside its text (the header with its letter).
HANDLE = {"x": 12, "y": 12}


def rank_lease_id(page: Any) -> int:
    action = page.get_attribute("#rank-form", "action")
    return int(re.search(r"/label/(\d+)/rank/$", action).group(1))


def wait_for_next_rank_card(page: Any, old_lease_id: int) -> None:
    page.wait_for_function(
        """old => {
            const form = document.getElementById('rank-form');
            const done = document.querySelector('#comparison-card .done');
            return done !== null || (form !== null &&
                !form.getAttribute('action').endsWith('/label/' + old + '/rank/'));
        }""",
        arg=old_lease_id,
    )


def shown(page: Any) -> list[tuple[str, str, bool]]:
    """(letter, place shown, tied with the one above), top to bottom."""
    return [
        (
            item.get_attribute("data-letter"),
            item.locator("[data-rank-pos]").inner_text(),
            item.get_attribute("data-tied") == "true",
        )
        for item in page.locator("[data-rank-list] > [data-rank-item]").all()
    ]


def focused_letter(page: Any) -> str | None:
    return page.evaluate(
        "() => document.activeElement && document.activeElement.dataset.letter || null"
    )


def announced(page: Any) -> str:
    return page.locator("#label-announcer").inner_text()


def test_ranking_by_keyboard_only(page: Any, live_server: Any, make_user: Any) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = make_rank_campaign(2)
    login_with_cookie(page.context, live_server, annotator.username)
    first = start_labeling(page, campaign.name)
    assert rank_lease_id(page) == first
    page.evaluate("window.__marker = 1")

    assert _blocking_violations(page, "ranking card") == []
    # The first answer has focus; Shift+arrows move focus, arrows the answer.
    expect(page.locator("[data-rank-item]").first).to_be_focused()
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    assert focused_letter(page) == "C"
    page.keyboard.press("1")  # C to the top
    assert [s[0] for s in shown(page)] == ["C", "A", "B", "D"]
    assert focused_letter(page) == "C"
    assert announced(page) == "Answer C is at place 1 of 4."
    for _ in range(3):
        page.keyboard.press("Shift+ArrowDown")
    assert focused_letter(page) == "D"
    page.keyboard.press("ArrowUp")  # D above B
    page.keyboard.press("Equal")  # tie D with A
    assert shown(page) == [
        ("C", "1", False),
        ("A", "2", False),
        ("D", "2", True),
        ("B", "4", False),
    ]
    assert announced(page) == "Answer D is at place 2 of 4, tied with answer A."
    expect(
        page.get_by_role("button", name="Tie answer D with the one above")
    ).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Enter")
    wait_for_next_rank_card(page, first)

    ranking = Ranking.objects.get(lease_id=first)
    lease = Lease.objects.get(pk=first)
    # Ranks aligned with the order shown (A, B, C, D): C best, A = D, B last.
    assert ranking.order == lease.order and ranking.ranks == [2, 4, 1, 2]
    assert not ranking.none_acceptable and ranking.reason == ""
    assert ranking.time_spent_ms and ranking.time_spent_ms > 0
    assert lease.status == Lease.Status.SUBMITTED
    assert ranking.implied_preferences.count() == 6

    # The next card: its first answer has focus and the swap was announced.
    second = rank_lease_id(page)
    expect(page.locator("[data-rank-item]").first).to_be_focused()
    assert "New answers to rank: 4 answers" in announced(page)
    page.keyboard.press("4")  # A to the bottom
    assert [s[0] for s in shown(page)] == ["B", "C", "D", "A"]
    page.keyboard.press("r")  # the reason (label.js)
    page.keyboard.type("None answers the question.")
    page.keyboard.press("Enter")  # Enter in the reason never submits
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Space")
    expect(page.get_by_label("None is acceptable")).to_be_checked()
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    expect(
        page.get_by_role("heading", name="Nothing left for you here")
    ).to_be_visible()

    ranking = Ranking.objects.get(lease_id=second)
    assert ranking.ranks == [4, 1, 2, 3]
    assert ranking.none_acceptable and ranking.reason == "None answers the question."
    assert page.evaluate("window.__marker") == 1, "a full page load happened"
    assert page.js_errors == []
    assert Ranking.objects.filter(annotator=annotator).count() == 2


def test_ranking_by_drag_with_a_tie_and_screenshots(
    page: Any, live_server: Any, make_user: Any
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    annotator = make_user(ANNOTATOR, username="maria")
    campaign = make_rank_campaign(1, name="Python help — rank four answers")
    login_with_cookie(page.context, live_server, annotator.username)
    lease_id = start_labeling(page, campaign.name)
    # The order is shuffled per lease; pin it so the screenshot is stable.
    lease = Lease.objects.get(pk=lease_id)
    Lease.objects.filter(pk=lease_id).update(order=sorted(lease.order))
    # Tall enough for the whole card: a drag then never scrolls mid-way.
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.reload()
    expect(page.locator("[data-rank-item]").first).to_contain_text("pandas")

    item = page.locator("[data-rank-list] > [data-rank-item]")

    def letter(name: str) -> Any:
        return page.locator(
            f'[data-rank-list] > [data-rank-item][data-letter="{name}"]'
        )

    # Text is selected, not dragged: a drag from an answer's text moves nothing.
    letter("D").locator(".prose").drag_to(
        letter("A"), target_position={"x": 40, "y": 8}
    )
    assert [s[0] for s in shown(page)] == ["A", "B", "C", "D"]
    # Dragged by its card: D onto the top half of A: first. Then A onto the
    # bottom half of C: last.
    letter("D").drag_to(
        letter("A"), source_position=HANDLE, target_position={"x": 40, "y": 8}
    )
    assert [s[0] for s in shown(page)] == ["D", "A", "B", "C"]
    assert announced(page) == "Answer D is at place 1 of 4."
    box = letter("C").bounding_box()
    letter("A").drag_to(
        letter("C"),
        source_position=HANDLE,
        target_position={"x": 40, "y": box["height"] - 8},
    )
    assert [s[0] for s in shown(page)] == ["D", "B", "C", "A"]
    # The buttons do the same as the keys: tie C with B, move nothing else.
    page.get_by_role("button", name="Tie answer C with the one above").click()
    assert shown(page) == [
        ("D", "1", False),
        ("B", "2", False),
        ("C", "2", True),
        ("A", "4", False),
    ]
    expect(item.nth(0).get_by_role("button", name="Move answer D up")).to_be_disabled()
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOTS / "ranking-card.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    assert _blocking_violations(page, "ranking card, phone") == []
    page.screenshot(path=str(SCREENSHOTS / "ranking-card-phone.png"))
    page.set_viewport_size({"width": 1400, "height": 1400})

    page.get_by_role("button", name="Submit ranking").click()
    expect(
        page.get_by_role("heading", name="Nothing left for you here")
    ).to_be_visible()
    ranking = Ranking.objects.get(lease_id=lease_id)
    assert ranking.order == sorted(lease.order)
    assert ranking.ranks == [4, 2, 2, 1]
    assert not ranking.none_acceptable
    assert page.js_errors == []

    # Back to the ranked lease: what was given, best first, no form.
    page.goto(f"/campaigns/{campaign.pk}/label/{lease_id}/")
    expect(page.locator("[data-answered]")).to_contain_text("D, B = C, A")
    assert page.locator("#rank-form").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "ranking-answered.png"))


def test_ranking_works_without_javascript(
    new_context: Any, live_server: Any, make_user: Any
) -> None:
    """Without scripts each answer has a place to choose (equal places tie);
    the plain post stores the ranking and the next card's page loads."""
    annotator = make_user(ANNOTATOR)
    campaign = make_rank_campaign(2)
    page = new_context(java_script_enabled=False).new_page()
    login_with_cookie(page.context, live_server, annotator.username)
    lease_id = start_labeling(page, campaign.name)
    expect(page.get_by_role("button", name="Move answer A up")).to_be_hidden()
    for letter, place in zip("ABCD", ("3", "1", "3", "2"), strict=True):
        page.get_by_label(f"Place of answer {letter}").select_option(place)
    page.get_by_label("None is acceptable").check()
    page.get_by_role("button", name="Submit ranking").click()
    page.wait_for_url(lambda url: not url.endswith(f"/label/{lease_id}/"))
    expect(page.locator("#rank-form")).to_be_visible()

    ranking = Ranking.objects.get(lease_id=lease_id)
    assert ranking.ranks == [3, 1, 3, 2] and ranking.none_acceptable
    assert ranking.time_spent_ms is None  # only the script measures time
    assert Lease.objects.get(pk=lease_id).status == Lease.Status.SUBMITTED
