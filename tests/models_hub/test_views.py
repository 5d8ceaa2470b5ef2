"""Reviewer pages of the model hub."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Completion, Lease, Preference
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
    assert "Start blind review" in client.get(url + query).content.decode()
    page = client.post(url + query)
    html = page.content.decode()
    assert page.status_code == 200 and "Left is better" in html
    assert "dpo-v1" not in html and "tiny" not in html
    lease = page.context["pair"].lease_id
    after = client.post(url + query, {"lease": lease, "choice": "left"})
    pref = Preference.objects.get(annotator=reviewer)
    assert pref.source == "reviewer"
    assert "You have judged every" in after.content.decode()


@pytest.mark.django_db
def test_model_pages_are_for_reviewers_and_actions_for_admins(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    annotator = _client(make_user(ANNOTATOR))
    assert annotator.get(reverse("models_hub:adapter-list")).status_code == 403
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
    assert reviewer.post(promote).status_code == 403
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "candidate"
    admin = _client(make_user(ADMIN))
    refused = admin.post(promote, follow=True)
    assert b"gate needs" in refused.content
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "candidate"
    admin.post(promote, {"override": "1", "reason": "reviewed by hand"})
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "champion"


@pytest.mark.django_db
def test_one_version_on_both_sides_is_refused_with_a_message(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """Side by side and blind mode both refuse to compare a version with
    itself (400 and a message, never a 500), and write nothing."""
    client = _client(make_user(REVIEWER))
    campaign = two_versions["campaign"].pk
    compare = reverse("models_hub:compare", args=[campaign])
    blind = reverse("models_hub:blind-review", args=[campaign])
    generate = reverse("models_hub:compare-generate", args=[campaign])
    for key in (two_versions["left"], two_versions["right"]):
        query = f"?left={key}&right={key}"
        for response in (
            client.get(compare + query),
            client.get(blind + query),
            client.post(blind + query),
            client.post(generate, {"left": key, "right": key}),
        ):
            assert response.status_code == 400
            assert b"Pick two different versions" in response.content
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_malformed_blind_and_generate_posts_are_400_not_500(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """``lease=abc`` on a blind vote and a generate without versions answer
    400 with a reason; nothing is leased, recorded or queued."""
    client = _client(make_user(REVIEWER))
    campaign = two_versions["campaign"].pk
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    blind = reverse("models_hub:blind-review", args=[campaign]) + query
    response = client.post(blind, {"lease": "abc", "choice": "left"})
    assert response.status_code == 400 and b"not a lease id" in response.content
    generate = reverse("models_hub:compare-generate", args=[campaign])
    for data in ({}, {"left": two_versions["left"]}, {"left": "x", "right": "y"}):
        response = client.post(generate, data)
        assert response.status_code == 400
        assert b"not a model version" in response.content
    assert not Lease.objects.exists() and not Preference.objects.exists()
    huge = client.post(blind, {"lease": "9" * 30, "choice": "left"})
    assert huge.status_code == 200 and not Preference.objects.exists()


@pytest.mark.django_db
def test_unknown_adapter_actions_are_404_and_next_never_leaves_the_site(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """An unknown action is a 404 (was NoReverseMatch → 500); ``next`` is
    followed only when it points to this site."""
    admin = _client(make_user(ADMIN))
    adapter = two_versions["adapter"]
    unknown = reverse("models_hub:adapter-action", args=[adapter.pk, "explode"])
    assert admin.post(unknown, {"next": "javascript:alert(1)"}).status_code == 404
    retire = reverse("models_hub:adapter-action", args=[adapter.pk, "retire"])
    listing = reverse("models_hub:adapter-list")
    for evil in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = admin.post(retire, {"next": evil})
        assert response.status_code == 302 and response["Location"] == listing
    leaderboard = reverse("models_hub:leaderboard", args=[adapter.campaign_id])
    response = admin.post(retire, {"next": leaderboard})
    assert response["Location"] == leaderboard
    adapter.refresh_from_db()
    assert adapter.status == "retired"
