"""Accessibility in a real browser (system Chromium through Playwright):
axe-core finds no serious or critical WCAG violation on any page, at desktop
(1366×900) and phone (390×844) size; blind review takes the labeling page's
keys; on a phone the labeling page shows the prompt in the first screen under
a compact action bar."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from labeling.models import Preference
from tests.browser.conftest import CHROMIUM
from tests.browser.test_offline_and_csp import _pages
from tests.conftest import PASSWORD
from tests.core.test_get_requests_do_not_write import world  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"browser tests need the system Chromium at {CHROMIUM}",
    ),
]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
BLOCKING = ("serious", "critical")
# Django's own admin (its templates and SelectFilter2.js, not ours) breaks
# two rules: breadcrumb links told apart by colour only, and aria-label on
# the filter widget's plain <span> icon. Every other rule holds there too.
DJANGO_ADMIN_KNOWN = {"link-in-text-block", "aria-prohibited-attr"}


def _log_in(page: Any, user: Any) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")


def _blocking_violations(page: Any, where: str) -> list[str]:
    """axe-core's serious and critical violations on the page, one readable
    line per failing element."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    in_admin = urlsplit(page.url).path.startswith("/admin/")
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] not in BLOCKING:
            continue
        if in_admin and violation["id"] in DJANGO_ADMIN_KNOWN:
            continue
        for node in violation["nodes"]:
            summary = node.get("failureSummary", "").replace("\n", " ")
            found.append(
                f"{where}: [{violation['impact']}] {violation['id']}: "
                f"{violation['help']} at {node['target']} ({summary})"
            )
    return found


def _start_labeling(page: Any, campaign_id: int) -> None:
    page.goto(reverse("labeling:label-start", args=[campaign_id]))
    page.get_by_role("button", name=re.compile("Start labeling")).click()
    page.wait_for_url(re.compile(r"/label/\d+/$"))


def _start_blind_review(page: Any, data: dict[str, Any]) -> None:
    left, right = data["versions"]
    page.goto(
        reverse("models_hub:blind-review", args=[data["values"]["campaign_id"]])
        + f"?left={left}&right={right}"
    )
    if page.locator("form[data-blind-vote]").count() == 0:
        start = page.get_by_role("button", name="Start blind review")
        assert start.count() == 1, page.inner_text("main")
        start.click()
    page.wait_for_selector("form[data-blind-vote]")


def test_axe_finds_no_serious_or_critical_violation_on_any_page_desktop_or_phone(
    world: dict[str, Any],  # noqa: F811 - the imported fixture
    new_context: Any,
) -> None:
    """Every page an admin reaches, the login form, a pair being labeled and
    a pair under blind review, at desktop and at phone size; no product page
    is wider than the phone."""
    found: list[str] = []
    wide: list[str] = []
    campaign_id = world["values"]["campaign_id"]
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        # axe is injected by page.evaluate, which the strict CSP (no eval)
        # refuses; bypass_csp lets it in without changing what is checked.
        page = new_context(viewport=viewport, bypass_csp=True).new_page()
        page.goto("/accounts/login/")
        found += _blocking_violations(page, f"{name} /accounts/login/")
        _log_in(page, world["admin"])
        for url in _pages(world):
            response = page.goto(url)
            assert response is not None and response.status < 400, (url, response)
            page.wait_for_load_state("load")
            found += _blocking_violations(page, f"{name} {url}")
            width = page.evaluate("document.documentElement.scrollWidth")
            if name == "phone" and not url.startswith("/admin/") and width > 390:
                wide.append(f"{url} is {width}px wide")
        # Blind review first: a live labeling lease keeps blind review waiting.
        _start_blind_review(page, world)
        found += _blocking_violations(page, f"{name} {page.url} (blind pair)")
        _start_labeling(page, campaign_id)
        found += _blocking_violations(page, f"{name} {page.url} (pair)")
        page.context.close()
    assert found == [], "axe violations:\n" + "\n".join(found)
    # On a phone, wide tables and the nav scroll in their box, never the page.
    assert wide == [], "pages wider than the phone:\n" + "\n".join(wide)


def test_blind_review_records_a_vote_on_key_1_and_phone_labeling_shows_prompt_first(
    world: dict[str, Any],  # noqa: F811 - the imported fixture
    new_context: Any,
) -> None:
    """Pressing 1 in blind review records a vote (a reviewer label) and
    moves on; at 390×844 the labeling page's prompt starts in the first
    screen and its action bar takes under a third of the viewport."""
    admin = world["admin"]
    page = new_context(viewport=DESKTOP).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(page, admin)
    _start_blind_review(page, world)
    lease = page.get_attribute("form[data-blind-vote] input[name=lease]", "value")
    before = Preference.objects.filter(
        annotator=admin, source=Preference.Source.REVIEWER
    ).count()
    page.keyboard.press("1")
    page.wait_for_function(
        "old => { const l = document.querySelector("
        "'form[data-blind-vote] input[name=lease]');"
        " return l === null || l.value !== old; }",
        arg=lease,
    )
    after = Preference.objects.filter(
        annotator=admin, source=Preference.Source.REVIEWER
    )
    assert after.count() == before + 1
    vote = after.order_by("-pk").first()
    assert vote.choice == ("a" if vote.a_on_left else "b")  # 1 is the left side

    phone = new_context(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(phone, admin)
    _start_labeling(phone, world["values"]["campaign_id"])
    prompt = phone.locator("#comparison-card .prompt").bounding_box()
    assert prompt is not None and prompt["y"] + 40 < PHONE["height"], prompt
    bar = phone.locator("#label-form").bounding_box()
    assert bar is not None and bar["height"] < PHONE["height"] / 3, bar
    # Touch screens get no key hints, and the stacked answers are Top/Bottom.
    assert not phone.locator(".choices kbd").first.is_visible()
    assert (
        phone.locator("#comparison-card .side h2").first.inner_text().strip() == "Top"
    )
    assert (
        phone.locator(".choices .choice").first.inner_text().strip() == "Top is better"
    )

    # The page itself never scrolls sideways.
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    assert errors == [], f"script errors: {errors}"
