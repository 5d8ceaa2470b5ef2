"""Reviewer pages of the model hub."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Completion, Preference
from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, PromptFactory


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def two_versions(db: None) -> dict[str, Any]:
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(name="tiny", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="x",
        metrics={},
    )
    prompt = PromptFactory(campaign=campaign, is_golden=True, text="Name a colour.")
    Completion.objects.create(
        prompt=prompt,
        text="The colour is blue today",
        content_hash="1",
        origin="model",
        adapter=adapter,
        base_model=base,
        source_label="adapter",
        metadata={"reward_score": 1.25},
    )
    Completion.objects.create(
        prompt=prompt,
        text="The colour is red today",
        content_hash="2",
        origin="model",
        base_model=base,
        source_label="base",
    )
    return {
        "campaign": campaign,
        "adapter": adapter,
        "base": base,
        "left": f"adapter:{adapter.pk}",
        "right": f"base:{base.pk}",
    }


@pytest.mark.django_db
def test_side_by_side_shows_both_outputs_with_a_word_diff_and_reward(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    client = _client(make_user(REVIEWER))
    url = reverse("models_hub:compare", args=[two_versions["campaign"].pk])
    html = client.get(
        url, {"left": two_versions["left"], "right": two_versions["right"]}
    ).content.decode()
    assert "<del>blue</del>" in html and "<ins>red</ins>" in html
    assert "reward 1.250" in html and "no labels yet" in html


@pytest.mark.django_db
def test_blind_votes_hide_the_versions_and_count_as_labels(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    reviewer = make_user(REVIEWER)
    client = _client(reviewer)
    url = reverse("models_hub:blind-review", args=[two_versions["campaign"].pk])
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    page = client.get(url + query)
    html = page.content.decode()
    assert page.status_code == 200 and "Left is better" in html
    assert "dpo-v1" not in html and "tiny" not in html
    lease = page.context["pair"].lease_id
    client.post(url + query, {"lease": lease, "choice": "left"})
    pref = Preference.objects.get(annotator=reviewer)
    assert pref.source == "reviewer"
    after = client.get(url + query).content.decode()
    assert "You have judged every" in after


@pytest.mark.django_db
def test_model_pages_are_for_reviewers_and_actions_for_admins(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    annotator = _client(make_user(ANNOTATOR))
    assert annotator.get(reverse("models_hub:adapter-list")).status_code == 302
    reviewer = _client(make_user(REVIEWER))
    listing = reviewer.get(reverse("models_hub:adapter-list"))
    assert listing.status_code == 200 and b"dpo-v1" in listing.content
    assert (
        reviewer.get(
            reverse("models_hub:leaderboard", args=[two_versions["campaign"].pk])
        ).status_code
        == 200
    )
    promote = reverse(
        "models_hub:adapter-action", args=[two_versions["adapter"].pk, "promote"]
    )
    assert reviewer.post(promote).status_code == 302
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "candidate"
    admin = _client(make_user(ADMIN))
    admin.post(promote)
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "champion"
