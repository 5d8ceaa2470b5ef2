"""The deployment page in real Chromium: an admin starts a canary, sees it
with the served counts, then rolls it back in one click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.roles import ADMIN
from models_hub.models import Deployment, DeploymentChange, ServedResponse
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    base_model_default,
)
from tests.browser.conftest import CHROMIUM
from tests.browser.test_labeling_ui import login_with_cookie
from tests.labeling.factories import CampaignFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.mark.django_db(transaction=True)
def test_admin_starts_a_canary_and_rolls_it_back(
    new_context: Any, live_server: Any, make_user: Any
) -> None:
    campaign = CampaignFactory(name="Support assistant")
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base_model_default(),
            method="dpo",
            peft_type="lora",
            storage_path="x",
            metrics={},
        )
        for _ in range(2)
    ]
    champion, candidate = adapters
    adapter_promote(adapter=champion, actor=None, override=True, reason="seed")
    for i in range(3):
        ServedResponse.objects.create(
            public_id=f"chatcmpl-ui{i}",
            endpoint="chat",
            requested_model=f"campaign-{campaign.pk}/champion",
            served_model=champion.served_name,
            base_model=champion.base_model,
            adapter=champion,
            campaign=campaign,
            arm="champion",
            prompt=[{"role": "user", "content": "hello"}],
            text="hi",
            finish_reason="stop",
        )
    make_user(ADMIN, username="ada")
    context = new_context()
    login_with_cookie(context, live_server, "ada")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"/models/?campaign={campaign.pk}")
    page.get_by_role("link", name="Deployment (canary, A/B)").click()
    page.wait_for_url(f"**/models/campaigns/{campaign.pk}/deployment/")
    page.select_option("select[name=mode]", "canary")
    page.select_option("select[name=candidate]", str(candidate.pk))
    page.fill("input[name=candidate_share]", "10%")
    page.fill("#deployment-change input[name=reason]", "try dpo-v2 on a tenth")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("Deployment changed.").wait_for()
    assert "canary" in page.get_by_test_id("deployment-mode").inner_text()
    assert "dpo-v2" in page.get_by_test_id("deployment-candidate").inner_text()
    deployment = Deployment.objects.get(campaign=campaign)
    assert (deployment.mode, deployment.candidate_id) == ("canary", candidate.pk)
    assert deployment.candidate_share == pytest.approx(0.1)
    page.get_by_text("Roll back last change…").click()
    page.screenshot(path=str(DOCS / "deployment.png"), full_page=True)

    page.fill("#deployment-rollback input[name=reason]", "not today")
    page.get_by_role("button", name="Roll back last change").click()
    page.get_by_text("Rolled back the last change.").wait_for()
    assert "champion only" in page.get_by_test_id("deployment-mode").inner_text()
    deployment.refresh_from_db()
    assert (deployment.mode, deployment.candidate_id) == ("champion", None)
    assert list(
        DeploymentChange.objects.order_by("id").values_list("action", flat=True)
    ) == ["updated", "rolled_back"]
    assert errors == []
