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


@pytest.mark.django_db(transaction=True)
def test_gold_is_marked_on_the_pair_page_from_the_sides_as_shown(
    new_context: Any, live_server: Any, make_user: Any
) -> None:
    """With the sides swapped (B on the left), "Left is the right answer"
    makes B the gold answer, and the page says so without a reload."""
    from labeling.models import Comparison
    from tests.labeling.factories import make_pairs

    campaign = CampaignFactory(name="Gold campaign")
    (pair,) = make_pairs(campaign, 1)
    Completion.objects.filter(pk=pair.completion_a_id).update(text="Answer A text")
    Completion.objects.filter(pk=pair.completion_b_id).update(text="Answer B text")
    make_user(REVIEWER, username="gwen")
    context = new_context()
    login_with_cookie(context, live_server, "gwen")
    page = context.new_page()

    page.goto(f"/campaigns/{campaign.pk}/pairs/{pair.pk}/")
    page.get_by_role("link", name="Swap sides").click()
    page.wait_for_url(lambda url: "sides=ba" in url)
    assert "Answer B text" in page.locator("#side-left").inner_text()
    assert "Answer A text" in page.locator("#side-right").inner_text()
    page.get_by_role("button", name="Left is the right answer").click()
    page.locator(
        ".gold-state", has_text="Gold pair: the left answer is right"
    ).wait_for()
    pair.refresh_from_db()
    assert (pair.is_gold, pair.gold_choice) == (True, "b")

    page.screenshot(path=str(DOCS / "pair-gold.png"), full_page=True)
    page.goto(f"/campaigns/{campaign.pk}/pairs/{pair.pk}/")
    page.locator(
        ".gold-state", has_text="Gold pair: the right answer is right"
    ).wait_for()
    page.get_by_role("button", name="Not gold").click()
    page.locator(".gold-state", has_text="Not a gold pair.").wait_for()
    assert Comparison.objects.get(pk=pair.pk).is_gold is False
    Preference.objects.create(
        comparison=pair,
        annotator=make_user(username="ann"),
        choice="b",
        a_on_left=False,
        rationale="B answers the question",
    )
    page.goto(f"/campaigns/{campaign.pk}/labels/?agreement=single")
    page.get_by_role("link", name=f"Pair {pair.pk}").wait_for()
    page.screenshot(path=str(DOCS / "labels.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_promote_asks_for_confirmation_and_keeps_the_filter(
    new_context: Any, live_server: Any, make_user: Any
) -> None:
    """The promote button is behind a confirmation that says what promoting
    does; confirming promotes (here by override) and lands on the same
    filtered list with a success message."""
    from core.roles import ADMIN
    from models_hub.models import Adapter

    campaign = CampaignFactory(name="Promote campaign")
    base = BaseModelVersion.objects.create(name="SmolLM2 (test)", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="x",
        metrics={},
    )
    make_user(ADMIN, username="ada")
    context = new_context()
    login_with_cookie(context, live_server, "ada")
    page = context.new_page()
    page.goto(f"/models/?campaign={campaign.pk}")
    confirm = page.get_by_role("button", name=f"Yes, promote {adapter.name}")
    assert not confirm.is_visible()
    page.get_by_text("promote…", exact=True).click()
    assert confirm.is_visible()
    assert (
        "becomes a candidate again"
        in page.locator("details.confirm[open]").inner_text()
    )
    confirm.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/models/?campaign={campaign.pk}")
    page.locator(".messages li.error").wait_for()
    assert Adapter.objects.get(pk=adapter.pk).status == "candidate"
    page.get_by_text("promote without passing the gate…").click()
    page.get_by_label("Why (recorded)").fill("checked by hand")
    page.get_by_role("button", name="Override and promote").click()
    page.locator(".messages li.success").wait_for()
    assert page.url.endswith(f"/models/?campaign={campaign.pk}")
    assert Adapter.objects.get(pk=adapter.pk).status == "champion"
