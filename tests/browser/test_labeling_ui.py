"""The annotator UI in a real browser (system Chromium through Playwright):
keyboard labeling over htmx, escaping of model output, blinding, the no-JS
fallback, and the screenshots in ``docs/screenshots``."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from core.roles import ANNOTATOR
from labeling.models import Comparison, Lease, Preference
from labeling.services import queue
from models_hub.models import Adapter, BaseModelVersion
from tests.browser.conftest import CHROMIUM
from tests.conftest import PASSWORD
from tests.labeling.factories import (
    CampaignFactory,
    ComparisonFactory,
    CompletionFactory,
    PromptFactory,
    make_pairs,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"browser tests need the system Chromium at {CHROMIUM}",
    ),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LEASE_URL = re.compile(r"/campaigns/\d+/label/(\d+)/$")

# Expected stored choice for a screen choice, given whether A was on the left.
EXPECTED = {
    "left": lambda a_on_left: "a" if a_on_left else "b",
    "right": lambda a_on_left: "b" if a_on_left else "a",
    "tie": lambda a_on_left: "tie",
}


def login_with_form(page: Any, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    # Not a bare r"/$": the login page's own URL ends with a slash too.
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    page.get_by_role("heading", name="Campaigns").wait_for()


def login_with_cookie(context: Any, live_server: Any, username: str) -> None:
    """Skip the form (already covered) by handing the browser a session."""
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session,
                "url": live_server.url,
            }
        ]
    )


def start_labeling(page: Any, campaign_name: str) -> int:
    """From the campaign list, press "Start labeling"; returns the lease id."""
    page.goto("/")
    page.locator("li.campaign", has_text=campaign_name).get_by_role(
        "button", name="Start labeling"
    ).click()
    page.wait_for_url(LEASE_URL)
    return int(LEASE_URL.search(page.url).group(1))


def form_lease_id(page: Any) -> int:
    action = page.get_attribute("#label-form", "action")
    return int(re.search(r"/label/(\d+)/submit/$", action).group(1))


def wait_for_next_card(page: Any, old_lease_id: int) -> None:
    """Wait until htmx has swapped in a card whose form submits another lease."""
    page.wait_for_function(
        """old => {
            const form = document.getElementById('label-form');
            return form !== null && !form.getAttribute('action').endsWith('/label/' + old + '/submit/');
        }""",
        arg=old_lease_id,
    )


def wait_for_paint(page: Any) -> None:
    """Wait until the current card has been painted (two animation frames),
    as a person would before pressing a key."""
    page.evaluate(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )


def test_keyboard_labels_three_pairs_without_reloading(
    page: Any, make_user: Any, monkeypatch: Any
) -> None:
    # Sides are drawn from queue._rng in the live server's thread (same
    # process): alternate them so both mappings are always exercised.
    sides = itertools.cycle([0.0, 0.9])  # < 0.5: A on the left
    monkeypatch.setattr(queue, "_rng", SimpleNamespace(random=lambda: next(sides)))
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    pairs = make_pairs(campaign, 4)

    login_with_form(page, annotator.username)
    first_lease = start_labeling(page, campaign.name)
    assert form_lease_id(page) == first_lease
    page.evaluate("window.__marker = 1")

    # (lease id, screen choice, ms from before the previous key press to after this one)
    seen: list[tuple[int, str, float | None]] = []
    previous_press = None
    for key, screen_choice in (("1", "left"), ("2", "right"), ("3", "tie")):
        lease_id = form_lease_id(page)
        wait_for_paint(page)
        before = time.monotonic()
        page.keyboard.press(key)
        after = time.monotonic()
        interval_ms = (
            (after - previous_press) * 1000 if previous_press is not None else None
        )
        previous_press = before
        # htmx swaps in the next card: new form action, then the pushed URL.
        wait_for_next_card(page, lease_id)
        page.wait_for_url(re.compile(rf"/label/{form_lease_id(page)}/$"))
        seen.append((lease_id, screen_choice, interval_ms))

    assert page.evaluate("window.__marker") == 1, (
        "a full page load happened between labels"
    )
    assert page.js_errors == []
    assert len({lease for lease, _, _ in seen}) == 3
    assert [Lease.objects.get(pk=lease).a_on_left for lease, _, _ in seen] == [
        True,
        False,
        True,
    ]

    prefs = Preference.objects.filter(annotator=annotator)
    assert prefs.count() == 3
    for lease_id, screen_choice, interval_ms in seen:
        lease = Lease.objects.get(pk=lease_id)
        pref = prefs.get(lease=lease)
        assert lease.status == Lease.Status.SUBMITTED
        assert pref.comparison_id == lease.comparison_id
        assert pref.a_on_left == lease.a_on_left
        assert pref.choice == EXPECTED[screen_choice](lease.a_on_left), (
            screen_choice,
            lease.a_on_left,
        )
        assert pref.time_spent_ms is not None and pref.time_spent_ms > 0
        if interval_ms is not None:
            # The timer restarts when a card is swapped in: the time for this
            # card cannot exceed the time since the previous key press.
            assert pref.time_spent_ms <= interval_ms + 1, (
                pref.time_spent_ms,
                interval_ms,
            )
        assert re.fullmatch(r"[0-9a-f]{32}", pref.client_request_id)
    assert len(set(prefs.values_list("client_request_id", flat=True))) == 3

    labeled = {Lease.objects.get(pk=lease_id).comparison_id for lease_id, _, _ in seen}
    for comparison in Comparison.objects.filter(pk__in=[p.pk for p in pairs]):
        if comparison.pk in labeled:
            assert (
                comparison.label_count == 1
                and comparison.status == Comparison.Status.COMPLETE
            )
            assert comparison.done_by == [annotator.pk]
        else:
            assert (
                comparison.label_count == 0
                and comparison.status == Comparison.Status.OPEN
            )
    # The fourth pair is on screen now, leased to this annotator.
    assert Lease.objects.get(pk=form_lease_id(page)).comparison_id not in labeled


XSS_TEXT = (
    "Raw HTML: <script>window.__xss=1</script>\n\n"
    '<img src=x onerror="window.__xss=2">\n\n'
    "A link: [click](javascript:window.__xss=3)\n"
)


def assert_inert(page: Any) -> None:
    card = page.locator("#comparison-card")
    assert page.evaluate("typeof window.__xss") == "undefined"
    expect(card.get_by_text("<script>window.__xss=1</script>")).to_be_visible()
    assert card.locator("script").count() == 0
    assert card.locator("img").count() == 0
    assert card.locator("[onerror]").count() == 0
    assert page.locator('a[href^="javascript:" i]').count() == 0


def test_model_output_is_shown_as_text_not_run(
    page: Any, live_server: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    # Served first, so the XSS pair below arrives as an htmx fragment.
    ComparisonFactory(campaign=campaign, priority=1)
    prompt = PromptFactory(campaign=campaign, text="Say something <b>bold</b>.")
    ComparisonFactory(
        campaign=campaign,
        prompt=prompt,
        completion_a=CompletionFactory(prompt=prompt, text=XSS_TEXT),
        completion_b=CompletionFactory(prompt=prompt, text="A harmless answer."),
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login_with_cookie(page.context, live_server, annotator.username)
    start_labeling(page, campaign.name)

    # The XSS pair swapped in by htmx (which runs <script> in swapped HTML).
    old = form_lease_id(page)
    page.keyboard.press("4")
    wait_for_next_card(page, old)
    assert_inert(page)

    # The same pair rendered as a full page.
    page.reload()
    assert_inert(page)
    card = page.locator("#comparison-card")
    expect(card.get_by_text("Say something <b>bold</b>.")).to_be_visible()
    assert card.locator("b").count() == 0

    # The javascript: link is not made a link at all: it stays literal text,
    # and clicking it neither runs anything nor navigates.
    # (Scoped to the pair's texts: the card also lists the annotator's recent
    # labels, as links.)
    assert card.locator(".prompt a, .side a").count() == 0
    url = page.url
    card.get_by_text("[click](javascript:window.__xss=3)").click()
    assert page.url == url
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == [] and page.js_errors == []


def test_labeling_page_hides_where_completions_come_from(
    page: Any, live_server: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(
        name="secret-base-xyz", source="builtin:smollm2-135m-instruct"
    )
    adapter = Adapter.objects.create(
        base_model=base,
        campaign=campaign,
        name="secret-adapter-xyz",
        version=1,
        method="dpo",
        storage_path="adapters/secret-adapter-xyz",
    )
    for n in range(2):
        prompt = PromptFactory(campaign=campaign)
        ComparisonFactory(
            campaign=campaign,
            prompt=prompt,
            completion_a=CompletionFactory(
                prompt=prompt, source_label="secret-model-xyz"
            ),
            completion_b=CompletionFactory(
                prompt=prompt,
                source_label="secret-model-xyz",
                origin="model",
                adapter=adapter,
                base_model=base,
                generation={"model": "secret-adapter-xyz", "seed": n},
            ),
        )
    login_with_cookie(page.context, live_server, annotator.username)
    start_labeling(page, campaign.name)
    pages = [page.content()]
    old = form_lease_id(page)
    page.keyboard.press("1")  # the second pair arrives as an htmx fragment
    wait_for_next_card(page, old)
    pages.append(page.content())
    for html in pages:
        for secret in (
            "secret-model-xyz",
            "secret-adapter-xyz",
            "secret-base-xyz",
            "writer",
            "smollm2",
        ):
            assert secret not in html


def test_labeling_works_without_javascript(new_context: Any, make_user: Any) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    page = new_context(java_script_enabled=False).new_page()
    assert page.evaluate("1 + 1") == 2  # evaluate still works; page scripts do not
    login_with_form(page, annotator.username)
    lease_id = start_labeling(page, campaign.name)
    assert page.evaluate("typeof window.htmx") == "undefined"

    page.get_by_role("button", name="Left is better").click()
    page.wait_for_url(
        lambda url: (
            LEASE_URL.search(url) is not None
            and not url.endswith(f"/label/{lease_id}/")
        )
    )

    lease = Lease.objects.get(pk=lease_id)
    pref = Preference.objects.get(annotator=annotator)
    assert pref.lease_id == lease_id and pref.choice == EXPECTED["left"](
        lease.a_on_left
    )
    assert re.fullmatch(r"[0-9a-f]{32}", pref.client_request_id)
    assert pref.time_spent_ms is None  # only the script measures time
    assert lease.status == Lease.Status.SUBMITTED


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_enter_in_the_reason_never_chooses_a_side(
    new_context: Any, make_user: Any, javascript: bool
) -> None:
    """R, a reason, Enter: nothing is stored (with or without JavaScript); the
    reason stays, and the label is what the annotator then picks."""
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    page = new_context(java_script_enabled=javascript).new_page()
    login_with_form(page, annotator.username)
    lease_id = start_labeling(page, campaign.name)

    if javascript:
        wait_for_paint(page)
        page.keyboard.press("r")
        expect(page.locator("[data-rationale]")).to_be_focused()
    else:
        page.locator("[data-rationale]").click()
    page.keyboard.type("the right one cites its source")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)

    assert not Preference.objects.filter(annotator=annotator).exists()
    assert form_lease_id(page) == lease_id
    assert page.locator("[data-rationale]").input_value() == (
        "the right one cites its source"
    )
    if javascript:
        expect(page.locator("[data-rationale-hint]")).to_contain_text("Esc")

    page.get_by_role("button", name="Right is better").click()
    if javascript:
        wait_for_next_card(page, lease_id)
    else:
        page.wait_for_url(lambda url: not url.endswith(f"/label/{lease_id}/"))
    pref = Preference.objects.get(annotator=annotator)
    lease = Lease.objects.get(pk=lease_id)
    assert pref.choice == EXPECTED["right"](lease.a_on_left)
    assert pref.rationale == "the right one cites its source"


GUIDELINES = """Compare the two answers to the prompt.

* Prefer the answer that is **correct** and actually answers the question.
* Then prefer the clearer one; length is not a virtue.
* Mark **both bad** when neither is acceptable.
"""

SCREENSHOT_PROMPT = "How do I read a large CSV file in Python without loading it all into memory? Show code."

SCREENSHOT_LEFT = """Use the standard library's `csv` module and iterate over the file: rows are read lazily, one at a time, so memory stays flat.

```python
import csv

def total_by_country(path):
    totals = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            country = row["country"]
            totals[country] = totals.get(country, 0) + float(row["amount"])
    return totals
```

Why this works:

1. `open()` returns a buffered file object; nothing is read up front.
2. `csv.DictReader` yields one `dict` per line.
3. Only `totals` grows, and it has one entry per country.

If you need **pandas**, pass `chunksize=100_000` to `read_csv` and aggregate each chunk.
"""

SCREENSHOT_RIGHT = """You can use pandas:

```python
import pandas as pd

df = pd.read_csv("big.csv")
print(df.groupby("country")["amount"].sum())
```

- Fast and concise.
- Handles types and missing values for you.
- Works for most files.

> Note: `read_csv` loads the whole file, so for files larger than your RAM you will need a different approach, such as reading in chunks or using a database.
"""


def test_screenshots(new_context: Any, live_server: Any, make_user: Any) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    annotator = make_user(ANNOTATOR, username="maria")
    campaign = CampaignFactory(
        name="Python help — code answers",
        description="Which answer would you rather get from a senior engineer?",
        guidelines=GUIDELINES,
        criteria=[{"name": "correctness"}, {"name": "clarity"}],
    )
    other = CampaignFactory(
        name="Customer support tone", description="Polite, accurate, concise."
    )
    make_pairs(other, 3)
    prompt = PromptFactory(campaign=campaign, text=SCREENSHOT_PROMPT)
    ComparisonFactory(
        campaign=campaign,
        prompt=prompt,
        completion_a=CompletionFactory(prompt=prompt, text=SCREENSHOT_LEFT),
        completion_b=CompletionFactory(prompt=prompt, text=SCREENSHOT_RIGHT),
    )
    make_pairs(campaign, 2)
    page = new_context().new_page()

    page.goto("/accounts/login/")
    page.screenshot(path=str(SCREENSHOTS / "login.png"))
    login_with_form(page, annotator.username)
    page.screenshot(path=str(SCREENSHOTS / "campaigns.png"))

    lease_id = start_labeling(page, campaign.name)
    # Sides are drawn at random; pin them so the screenshot is stable.
    Lease.objects.filter(pk=lease_id).update(a_on_left=True)
    page.reload()
    assert "csv.DictReader" in page.locator('.side[data-side="left"]').inner_text()
    wait_for_paint(page)
    page.screenshot(path=str(SCREENSHOTS / "labeling.png"))

    # Everything an annotator needs is on screen without scrolling.
    for name in ("Left is better", "Right is better", "Tie", "Both bad"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert (
            box
            and 0 <= box["y"]
            and box["y"] + box["height"] <= 900
            and box["x"] + box["width"] <= 1400
        ), name
    left, right = (
        page.locator(f'.side[data-side="{s}"]').bounding_box()
        for s in ("left", "right")
    )
    assert left["x"] + left["width"] <= right["x"], "the two answers overlap"
    for png in ("login.png", "campaigns.png", "labeling.png"):
        assert (SCREENSHOTS / png).stat().st_size > 10_000


# ---------------------------------------------------------------- what the annotator meant and saw


def test_contradicting_strength_is_refused_with_a_reason(
    page: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    login_with_form(page, annotator.username)
    lease_id = start_labeling(page, campaign.name)

    page.select_option("select[name=strength]", label="right, much")
    wait_for_paint(page)
    page.keyboard.press("1")

    alert = page.locator("#comparison-card .messages li.error")
    expect(alert).to_contain_text("strength says right is better")
    assert not Preference.objects.filter(annotator=annotator).exists()
    assert form_lease_id(page) == lease_id
    expect(page.locator("#label-announcer")).to_contain_text("strength says right")
    # The strength the annotator picked is still selected: fix one of the two.
    assert page.locator("select[name=strength]").input_value() == "3"
    page.keyboard.press("2")
    wait_for_next_card(page, lease_id)
    pref = Preference.objects.get(annotator=annotator)
    lease = Lease.objects.get(pk=lease_id)
    assert pref.choice == EXPECTED["right"](lease.a_on_left)
    assert pref.strength == (3 if lease.a_on_left else -3)


def test_back_and_answer_again_changes_the_label_as_a_new_version(
    page: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    login_with_form(page, annotator.username)
    first = start_labeling(page, campaign.name)
    wait_for_paint(page)
    page.keyboard.press("1")
    wait_for_next_card(page, first)
    second = form_lease_id(page)
    page.wait_for_url(re.compile(rf"/label/{second}/$"))

    page.go_back()
    page.wait_for_url(re.compile(rf"/label/{first}/$"))
    expect(page.locator("[data-answered]")).to_contain_text(
        "You already answered this pair: Left is better"
    )
    expect(page.locator("[data-answered]")).to_contain_text("You can change it until")
    assert form_lease_id(page) == first
    wait_for_paint(page)
    page.keyboard.press("2")
    wait_for_next_card(page, first)

    expect(page.locator("#comparison-card .messages")).to_contain_text(
        "Label changed to “Right is better” (version 2"
    )
    assert form_lease_id(page) == second  # the pair that was waiting
    lease = Lease.objects.get(pk=first)
    pref = Preference.objects.get(annotator=annotator, lease=lease)
    assert pref.version == 2
    assert pref.choice == EXPECTED["right"](lease.a_on_left)
    assert pref.revisions.get().choice == EXPECTED["left"](lease.a_on_left)
    assert Preference.objects.filter(annotator=annotator).count() == 1

    # The recent-labels list, read when opened, opens the pair again; the
    # change is shown.
    page.locator("[data-recent-labels] summary").click()
    page.locator("[data-recent-labels] ol a").first.click()
    expect(page.locator("[data-answered]")).to_contain_text("Right is better")
    expect(page.locator("[data-answered]")).to_contain_text("changed 1 time")


POEM = "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you."
COLUMNS = 30
WIDE_TABLE = (
    "| "
    + " | ".join(f"column {i}" for i in range(COLUMNS))
    + " |\n|"
    + "---|" * COLUMNS
    + "\n| "
    + " | ".join("10" for _ in range(COLUMNS))
    + " |\n"
)


def test_answers_render_as_the_model_wrote_them(
    new_context: Any, make_user: Any
) -> None:
    """A poem keeps its lines (not the same as the words on one line), a wide
    table scrolls inside its box with no cell split inside a number, a
    heading in an answer is smaller than the UI's, and an answer cut at
    max_new_tokens is marked."""
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    prompt = PromptFactory(campaign=campaign, text="Write a poem, then a table.")
    ComparisonFactory(
        campaign=campaign,
        prompt=prompt,
        completion_a=CompletionFactory(
            prompt=prompt, text=POEM + "\n\n# Table\n\n" + WIDE_TABLE
        ),
        completion_b=CompletionFactory(
            prompt=prompt,
            text=POEM.replace("\n", " ") + " and then the model ran out of",
            generation={"max_new_tokens": 96, "finished": False, "new_tokens": 96},
        ),
    )
    page = new_context(viewport={"width": 1366, "height": 900}).new_page()
    login_with_form(page, annotator.username)
    lease_id = start_labeling(page, campaign.name)
    a_on_left = Lease.objects.get(pk=lease_id).a_on_left
    poem_side = page.locator(f'.side[data-side="{"left" if a_on_left else "right"}"]')
    flat_side = page.locator(f'.side[data-side="{"right" if a_on_left else "left"}"]')

    poem_text = poem_side.locator(".prose").inner_text()
    assert "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you." in (
        poem_text
    )
    assert (
        "Roses are red, violets are blue," in flat_side.locator(".prose").inner_text()
    )

    # No cell is split inside a word: a cell takes at most one line per word
    # (the "10"s one line each); the table scrolls inside its box instead.
    lines_and_words = page.evaluate(
        """side => Array.from(document.querySelectorAll(
                `.side[data-side="${side}"] td, .side[data-side="${side}"] th`
            )).map(cell => {
                const range = document.createRange();
                range.selectNodeContents(cell);
                const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
                return [tops.size, cell.textContent.trim().split(/\\s+/).length];
            })""",
        "left" if a_on_left else "right",
    )
    assert len(lines_and_words) == 2 * COLUMNS
    assert all(lines <= words for lines, words in lines_and_words), lines_and_words
    assert [lines for lines, _ in lines_and_words[COLUMNS:]] == [1] * COLUMNS
    table = poem_side.locator("table")
    sizes = table.evaluate(
        "t => [t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX]"
    )
    assert sizes[0] > sizes[1] and sizes[2] == "auto", sizes
    side_box = poem_side.bounding_box()
    table_box = table.bounding_box()
    assert table_box["x"] + table_box["width"] <= side_box["x"] + side_box["width"] + 1

    heading_size = poem_side.locator(".prose h1").evaluate(
        "h => parseFloat(getComputedStyle(h).fontSize)"
    )
    page_heading_size = page.locator("#comparison-card header h1").evaluate(
        "h => parseFloat(getComputedStyle(h).fontSize)"
    )
    assert heading_size < page_heading_size

    expect(flat_side.locator("[data-cut]")).to_have_text(
        "✂ cut at 96 tokens: the model was stopped before it finished."
    )
    assert poem_side.locator("[data-cut]").count() == 0


def test_held_key_labels_one_card_and_the_new_card_is_announced_and_focused(
    page: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    login_with_form(page, annotator.username)
    first = start_labeling(page, campaign.name)
    wait_for_paint(page)

    page.keyboard.down("1")
    wait_for_next_card(page, first)
    wait_for_paint(page)
    # The key is still held: the browser repeats it (event.repeat is true).
    for _ in range(5):
        page.keyboard.down("1")
    page.keyboard.up("1")
    page.wait_for_timeout(600)

    assert Preference.objects.filter(annotator=annotator).count() == 1
    assert Lease.objects.get(pk=form_lease_id(page)).status == Lease.Status.ACTIVE
    expect(page.locator("#label-announcer")).to_contain_text("New pair to label.")
    assert page.evaluate("document.activeElement.id") == "comparison-card"


def test_long_prompt_keeps_the_answers_in_view_and_shows_all_on_request(
    new_context: Any, make_user: Any
) -> None:
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    long_prompt = "\n\n".join(
        f"Paragraph {i}: " + "the quick brown fox jumps over the lazy dog " * 8
        for i in range(60)
    )
    prompt = PromptFactory(campaign=campaign, text=long_prompt)
    ComparisonFactory(campaign=campaign, prompt=prompt)
    page = new_context(viewport={"width": 1366, "height": 900}).new_page()
    login_with_form(page, annotator.username)
    start_labeling(page, campaign.name)

    sides_top = page.locator(".sides").bounding_box()["y"]
    assert sides_top < 900, sides_top
    toggle = page.get_by_role("button", name="Show all of the prompt")
    expect(toggle).to_be_visible()
    toggle.click()
    expect(
        page.get_by_role("button", name="Show less of the prompt")
    ).to_have_attribute("aria-expanded", "true")
    assert page.locator(".sides").bounding_box()["y"] > 900
