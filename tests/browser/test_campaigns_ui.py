"""The campaign page's import upload in real Chromium: htmx posts the file,
the progress script reaches "Processing…", the result (or the bad line)
replaces the card and the counts update out of band."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from core.roles import ADMIN
from labeling.models import Comparison, Prompt
from tests.browser.conftest import CHROMIUM
from tests.browser.test_labeling_ui import login_with_cookie
from tests.labeling.factories import CampaignFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

# Runs after import.js's own listener (registered first), so it reads the
# status text that listener has just written.
RECORD_STATUS = """() => {
  window.importStatuses = [];
  document.addEventListener("htmx:xhr:progress", () => {
    const status = document.querySelector("[data-import-status]");
    if (status) { window.importStatuses.push(status.textContent); }
  });
}"""


def _file(rows: list[dict[str, Any]], *, prefix: bytes = b"") -> dict[str, Any]:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {
        "name": "rows.jsonl",
        "mimeType": "application/jsonl",
        "buffer": prefix + body.encode(),
    }


def test_admin_uploads_a_file_and_sees_what_was_created(
    new_context: Any, live_server: Any, make_user: Any, settings: Any
) -> None:
    campaign = CampaignFactory(name="Upload campaign")
    admin = make_user(ADMIN)
    context = new_context()
    login_with_cookie(context, live_server, admin.username)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"/campaigns/{campaign.pk}/")
    page.evaluate(RECORD_STATUS)
    card = page.locator("#campaign-import")

    # A bad line: the card names it, nothing is written.
    page.set_input_files(
        "#campaign-import input[type=file]",
        _file([{"prompt": "fine", "completions": ["a", "b"]}, {"prompt": ""}]),
    )
    card.get_by_role("button", name="Import").click()
    expect(card.get_by_role("alert")).to_contain_text(
        "Line 2, field prompt: must not be empty. Nothing was imported."
    )
    assert not Prompt.objects.filter(campaign=campaign).exists()

    # A good file with a BOM and enough lines to take a few progress events.
    rows = [
        {"prompt": f"Question {i}: {'x' * 2000}", "completions": [f"a{i}", f"b{i}"]}
        for i in range(1500)
    ]
    page.set_input_files(
        "#campaign-import input[type=file]", _file(rows, prefix=b"\xef\xbb\xbf")
    )
    card.get_by_role("button", name="Import").click()
    expect(card.get_by_role("status").first).to_contain_text(
        "Imported 1500 lines: 1500 prompts, 3000 completions and 1500 pairs created",
        timeout=60_000,
    )
    expect(page.locator("#campaign-counts")).to_contain_text("1,500 pairs open")
    statuses = page.evaluate("window.importStatuses")
    assert any(s.startswith("Upload complete. Processing") for s in statuses), statuses
    assert Comparison.objects.filter(campaign=campaign).count() == 1500
    assert errors == []

    # Over the limit: refused in the browser before anything is sent.
    settings.ARBITER_IMPORT_MAX_BYTES = 1000
    page.reload()
    page.set_input_files(
        "#campaign-import input[type=file]",
        _file([{"prompt": "p" * 2000, "completions": ["c", "d"]}]),
    )
    card.get_by_role("button", name="Import").click()
    expect(page.locator("[data-import-status]")).to_contain_text("the limit is")
    assert Prompt.objects.filter(campaign=campaign).count() == 1500
