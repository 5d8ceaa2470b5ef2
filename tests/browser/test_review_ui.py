"""The reviewer's side-by-side page in real Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.roles import REVIEWER
from labeling.models import Completion, Preference
from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from models_hub.services.reports import campaign_reports_refresh
from tests.browser.conftest import CHROMIUM
from tests.browser.test_labeling_ui import login_with_cookie
from tests.labeling.factories import CampaignFactory, PromptFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.mark.django_db(transaction=True)
def test_side_by_side_compares_two_versions_and_blind_votes_count(
    new_context: Any, live_server: Any, make_user: Any
) -> None:
    campaign = CampaignFactory(name="Review campaign")
    base = BaseModelVersion.objects.create(name="SmolLM2 (test)", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="x",
        metrics={},
    )
    for i, (mine, theirs) in enumerate(
        [
            ("Paris is the capital of France.", "The capital of France is Lyon."),
            (
                "Water boils at 100 °C at sea level.",
                "Water boils at 90 °C at sea level.",
            ),
        ]
    ):
        prompt = PromptFactory(
            campaign=campaign, is_golden=True, text=f"Golden question {i}?"
        )
        Completion.objects.create(
            prompt=prompt,
            text=mine,
            content_hash=f"m{i}",
            origin="model",
            adapter=adapter,
            base_model=base,
            source_label="adapter",
            metadata={"reward_score": 1.5 - i},
        )
        Completion.objects.create(
            prompt=prompt,
            text=theirs,
            content_hash=f"t{i}",
            origin="model",
            base_model=base,
            source_label="base",
        )
    reviewer = make_user(REVIEWER, username="rita")
    context = new_context()
    login_with_cookie(context, live_server, "rita")
    page = context.new_page()

    page.goto(f"/models/campaigns/{campaign.pk}/compare/")
    page.select_option("select[name=left]", f"adapter:{adapter.pk}")
    page.select_option("select[name=right]", f"base:{base.pk}")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(lambda url: "left=" in url)
    rows = page.locator(".compare-row")
    assert rows.count() == 2
    first = rows.nth(0)
    deleted = " ".join(first.locator("del").all_inner_texts())
    inserted = " ".join(first.locator("ins").all_inner_texts())
    assert (
        "Paris" in deleted
        and "Lyon" in inserted
        and "capital" not in deleted + inserted
    )
    assert "reward 1.500" in first.inner_text()
    page.screenshot(path=str(DOCS / "side-by-side.png"), full_page=True)

    page.get_by_role("link", name="Blind mode").click()
    page.get_by_role("button", name="Start blind review").click()
    for _ in range(2):
        page.get_by_role("button", name="Left is better").wait_for()
        html = page.content()
        assert "dpo-v1" not in html and "SmolLM2 (test)" not in html
        page.get_by_role("button", name="Left is better").click()
        page.wait_for_load_state()
    page.get_by_text("You have judged every").wait_for()
    votes = Preference.objects.filter(annotator=reviewer)
    assert votes.count() == 2 and set(votes.values_list("source", flat=True)) == {
        "reviewer"
    }

    # The win rate comes from the cached report, which a worker refreshes
    # after labels change; this test runs no worker, so refresh it here.
    assert campaign_reports_refresh(campaign_id=campaign.pk)
    page.goto(
        f"/models/campaigns/{campaign.pk}/compare/?left=adapter:{adapter.pk}&right=base:{base.pk}"
    )
    assert "2 labels" in page.locator(".stats").first.inner_text()
