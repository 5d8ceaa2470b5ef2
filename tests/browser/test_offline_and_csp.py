"""Offline and under the Content-Security-Policy, in a real browser (system
Chromium through Playwright): every page of the product, walked as an admin,
loads nothing from another origin and breaks no CSP rule; Swagger UI at
/api/docs/ renders from our own static files; charts draw; a label submitted
over htmx is stored. The walk saves the first screen of every page at
desktop (1366x900) and phone (390x844) size in docs/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.urls import resolve, reverse
from playwright.sync_api import expect

from labeling.models import Preference
from tests.browser.conftest import CHROMIUM
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

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# docs/screenshots/<page>-desktop.png and <page>-phone.png of every page.
VIEWPORTS = {"desktop": (1366, 900), "phone": (390, 844)}


def screenshot_name(url: str) -> str:
    """A page's file name from its URL name: ``training-job-detail``."""
    match = resolve(urlsplit(url).path)
    return "-".join([*match.namespaces, match.url_name or "page"]).replace("_", "-")


def save_screenshots(page: Any, name: str) -> None:
    """The first screen of the open page at each size (not the full page:
    small files), then back to the desktop size."""
    for size, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)  # charts redraw on resize
        path = SCREENSHOTS / f"{name}-{size}.png"
        page.screenshot(path=str(path), full_page=False)
        assert path.stat().st_size > 5_000, path
    width, height = VIEWPORTS["desktop"]
    page.set_viewport_size({"width": width, "height": height})


# Record violations as the page sees them, in addition to the console.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__arbiterReportViolation(
    e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.documentURI
  );
});
"""


def _pages(data: dict[str, Any]) -> list[str]:
    v = data["values"]
    campaign = v["campaign_id"]
    left, right = data["versions"]
    versions = f"?left={left}&right={right}"
    return [
        reverse("labeling:campaign-list"),
        reverse("labeling:campaign-detail", args=[campaign]),
        reverse("labeling:campaign-create"),
        reverse("labeling:campaign-edit", args=[campaign]),
        reverse("labeling:label-start", args=[campaign]),
        reverse("labeling:campaign-quality", args=[campaign]),
        reverse("labeling:annotator-detail", args=[campaign, v["annotator_id"]]),
        reverse("labeling:campaign-labels", args=[campaign]),
        reverse("labeling:comparison-detail", args=[campaign, v["comparison_id"]]),
        reverse("models_hub:leaderboard", args=[campaign]),
        reverse("models_hub:compare", args=[campaign]) + versions,
        reverse("models_hub:blind-review", args=[campaign]) + versions,
        reverse("models_hub:adapter-list"),
        reverse("models_hub:generation-job-list"),
        reverse("models_hub:generation-job-detail", args=[v["generation_job_id"]]),
        reverse("training:job-list"),
        reverse("training:job-detail", args=[v["job_id"]]),
        reverse("training:job-launch") + f"?campaign={campaign}",
        reverse("training:campaign-settings", args=[campaign]),
        reverse("training:campaign-loop", args=[campaign]),
        reverse("core:people"),
        reverse("core:profile"),
        "/admin/",
        "/admin/labeling/campaign/",
        f"/admin/labeling/campaign/{campaign}/change/",
    ]


def test_every_page_loads_only_our_origin_and_breaks_no_csp_rule(
    world: dict[str, Any],  # noqa: F811 - the imported fixture
    new_context: Any,
    live_server: Any,
) -> None:
    """As an admin: the login form, every product page, the admin and the
    API docs request nothing from another origin and trigger no CSP
    violation; every HTML page carries the policy; Swagger UI renders; a
    training chart draws; pressing 1 on the label page stores a label."""
    origin = urlsplit(live_server.url)
    foreign: list[str] = []
    violations: list[str] = []
    errors: list[str] = []

    context = new_context()
    context.expose_function(
        "__arbiterReportViolation", lambda text: violations.append(text)
    )
    context.add_init_script(REPORT_VIOLATIONS)

    def on_request(request: Any) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob"):
            return
        if (url.scheme, url.netloc) != (origin.scheme, origin.netloc):
            foreign.append(request.url)

    context.on("request", on_request)
    page = context.new_page()
    page.on(
        "console",
        lambda msg: (
            violations.append(msg.text)
            if "Content Security Policy" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    admin = world["admin"]
    response = page.goto("/accounts/login/")
    policy = response.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    save_screenshots(page, "login")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")

    names = [screenshot_name(url) for url in _pages(world)]
    assert len(set(names)) == len(names), names
    for name, url in zip(names, _pages(world), strict=True):
        response = page.goto(url)
        assert response is not None and response.status < 400, (url, response)
        assert "script-src 'self'" in response.headers.get(
            "content-security-policy", ""
        ), f"{url} has no CSP header"
        page.wait_for_load_state("load")
        save_screenshots(page, name)

    # A chart drawn by the vendored Chart.js from the JSON beside its canvas.
    page.goto(reverse("training:job-detail", args=[world["values"]["job_id"]]))
    page.wait_for_function(
        "() => [...document.querySelectorAll('figure.chart canvas')]"
        ".some((c) => window.Chart && Chart.getChart(c))"
    )

    # Swagger UI from the sidecar's static files, its script not inline.
    page.goto(reverse("api-docs"))
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Arbiter API")
    expect(page.locator(".opblock").first).to_be_visible()
    save_screenshots(page, "api-docs")

    # Labeling under the policy: htmx swaps in the next card after a key press.
    campaign_id = world["values"]["campaign_id"]
    page.goto(reverse("labeling:label-start", args=[campaign_id]))
    page.get_by_role("button", name=re.compile("Start labeling")).click()
    page.wait_for_url(re.compile(r"/label/\d+/$"))
    action = page.get_attribute("#label-form", "action")
    save_screenshots(page, "labeling-label")
    before = Preference.objects.filter(annotator=admin).count()
    page.keyboard.press("1")
    page.wait_for_function(
        "old => { const f = document.getElementById('label-form');"
        " return f === null || f.getAttribute('action') !== old; }",
        arg=action,
    )
    assert Preference.objects.filter(annotator=admin).count() == before + 1

    assert foreign == [], f"requests to another origin: {foreign}"
    assert violations == [], f"CSP violations: {violations}"
    assert errors == [], f"script errors: {errors}"
