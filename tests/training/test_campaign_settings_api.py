"""GET/PATCH /api/v1/campaigns/<id>/settings/: roles, partial updates, errors."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from models_hub.models import GenerationSettings
from tests.labeling.factories import CampaignFactory
from training.models import TrainingPolicy


def _url(campaign_id: int) -> str:
    return reverse("api-campaign-settings", args=[campaign_id])


@pytest.mark.django_db
def test_annotators_and_anonymous_visitors_get_nothing(
    make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    annotator = api_client_for(make_user(ANNOTATOR))
    assert annotator.get(_url(campaign.pk)).status_code == 403
    patched = annotator.patch(
        _url(campaign.pk), {"campaign": {"overlap_k": 2}}, format="json"
    )
    assert patched.status_code == 403
    anonymous = api_client_for(None)
    assert anonymous.get(_url(campaign.pk)).status_code == 401
    assert anonymous.patch(_url(campaign.pk), {}, format="json").status_code == 401
    campaign.refresh_from_db()
    assert campaign.overlap_k == 1


@pytest.mark.django_db
def test_reviewer_reads_the_defaults_of_a_fresh_campaign_but_cannot_patch(
    make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    reviewer = api_client_for(make_user(REVIEWER))
    response = reviewer.get(_url(campaign.pk))
    assert response.status_code == 200
    body = response.json()
    assert body["campaign"] == {
        "id": campaign.pk,
        "name": campaign.name,
        "overlap_k": 1,
        "gold_rate": 0.0,
        "lease_ttl_seconds": 600,
        "label_edit_minutes": 5,
        "status": "active",
        "annotators": [],
    }
    assert body["training"] == {
        "stored": False,
        "enabled": True,
        "pipeline": "dpo",
        "min_new_preferences": 40,
        "min_interval_minutes": 10,
        "base_model": None,
        "config_overrides": {},
        "tie_policy": "skip",
        "processes": None,
        "strategy": "",
        "last_triggered_at": None,
    }
    assert body["generation"]["stored"] is False
    assert body["generation"]["temperature"] == 0.7
    assert body["generation"]["samples_per_prompt"] == 2
    assert body["generation"]["max_nll_increase"] == 1.0
    assert len(body["generation"]) == 20
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()

    patched = reviewer.patch(
        _url(campaign.pk), {"generation": {"temperature": 0.2}}, format="json"
    )
    assert patched.status_code == 403
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_admin_partial_patch_changes_only_the_named_fields(
    make_user: Any, api_client_for: Any
) -> None:
    make_user(ANNOTATOR, "ann")
    campaign = CampaignFactory(gold_rate=0.1)
    admin = api_client_for(make_user(ADMIN))
    response = admin.patch(
        _url(campaign.pk),
        {
            "campaign": {"overlap_k": 2, "annotators": ["ann"]},
            "training": {"pipeline": "reward_rloo", "config_overrides": {}},
            "generation": {"top_p": 1.0, "retire_losers": False},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["campaign"]["overlap_k"] == 2
    assert body["campaign"]["gold_rate"] == 0.1
    assert body["campaign"]["annotators"] == ["ann"]
    assert body["training"]["stored"] is True
    assert body["training"]["pipeline"] == "reward_rloo"
    assert body["training"]["min_new_preferences"] == 40
    assert body["generation"]["top_p"] == 1.0
    assert body["generation"]["temperature"] == 0.7
    campaign.refresh_from_db()
    assert (campaign.overlap_k, campaign.gold_rate) == (2, 0.1)
    assert TrainingPolicy.objects.get(campaign=campaign).pipeline == "reward_rloo"
    row = GenerationSettings.objects.get(campaign=campaign)
    assert row.top_p == 1.0 and row.retire_losers is False and row.auto_promote

    only_training = admin.patch(
        _url(campaign.pk), {"training": {"enabled": False}}, format="json"
    )
    assert only_training.status_code == 200
    assert only_training.json()["training"]["pipeline"] == "reward_rloo"
    assert only_training.json()["campaign"]["annotators"] == ["ann"]
    assert TrainingPolicy.objects.get(campaign=campaign).enabled is False


@pytest.mark.django_db
def test_an_invalid_field_is_a_400_naming_its_path_and_nothing_changes(
    make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    admin = api_client_for(make_user(ADMIN))
    response = admin.patch(
        _url(campaign.pk),
        {
            "campaign": {"overlap_k": 5},
            "training": {"min_new_preferences": 3},
            "generation": {"temperature": 0, "priority": 3},
        },
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["generation"] == {"temperature": ["Must be greater than 0."]}
    assert "campaign" not in body and "training" not in body
    assert "nothing was changed" in body["detail"]
    campaign.refresh_from_db()
    assert campaign.overlap_k == 1
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_wrong_types_and_unknown_keys_are_400s_by_path(
    make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    admin = api_client_for(make_user(ADMIN))
    response = admin.patch(
        _url(campaign.pk),
        {
            "campaign": {"gold_rate": "lots"},
            "generation": {"tempreature": 0.5, "seed": "x"},
            "promotion": {},
        },
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body["campaign"]) == {"gold_rate"}
    assert set(body["generation"]) == {"tempreature", "seed"}
    assert "promotion" in body
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_unknown_usernames_are_all_listed(make_user: Any, api_client_for: Any) -> None:
    make_user(ANNOTATOR, "known")
    campaign = CampaignFactory()
    admin = api_client_for(make_user(ADMIN))
    response = admin.patch(
        _url(campaign.pk),
        {"campaign": {"annotators": ["known", "ghost", "phantom"]}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["campaign"] == {
        "annotators": ["Unknown usernames: ghost, phantom."]
    }
    assert not campaign.annotators.exists()


@pytest.mark.django_db
def test_config_overrides_are_checked_against_the_runner_config(
    make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    admin = api_client_for(make_user(ADMIN))
    bad = admin.patch(
        _url(campaign.pk),
        {"training": {"config_overrides": {"dpo": {"not_a_field": 1}}}},
        format="json",
    )
    assert bad.status_code == 400
    (message,) = bad.json()["training"]["config_overrides"]
    assert message.startswith("dpo:") and "not_a_field" in message
    ok = admin.patch(
        _url(campaign.pk),
        {"training": {"config_overrides": {"reward": {"learning_rate": 0.001}}}},
        format="json",
    )
    assert ok.status_code == 200
    assert TrainingPolicy.objects.get(campaign=campaign).config_overrides == {
        "reward": {"learning_rate": 0.001}
    }


@pytest.mark.django_db
def test_a_missing_campaign_is_a_404(make_user: Any, api_client_for: Any) -> None:
    campaign = CampaignFactory()
    admin = api_client_for(make_user(ADMIN))
    assert admin.get(_url(campaign.pk + 1000)).status_code == 404
    missing = admin.patch(
        _url(campaign.pk + 1000), {"campaign": {"overlap_k": 2}}, format="json"
    )
    assert missing.status_code == 404
