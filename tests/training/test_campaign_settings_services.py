"""A campaign's loop settings read and changed in one place."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign
from models_hub.models import BaseModelVersion, GenerationSettings
from models_hub.services.registry import generation_settings_for
from tests.labeling.factories import CampaignFactory
from training.models import TrainingPolicy
from training.services.campaign_settings import (
    CampaignSettingsInvalid,
    campaign_settings_get,
    campaign_settings_update,
    settings_campaign_get,
)
from training.services.scheduler import policies_ensure


def _snapshot(campaign: Campaign) -> dict[str, Any]:
    """Every row the settings touch, as plain values."""
    campaign.refresh_from_db()
    return {
        "campaign": {
            f: getattr(campaign, f)
            for f in (
                "overlap_k",
                "gold_rate",
                "lease_ttl_seconds",
                "label_edit_minutes",
                "status",
            )
        },
        "annotators": sorted(campaign.annotators.values_list("username", flat=True)),
        "policies": list(TrainingPolicy.objects.filter(campaign=campaign).values()),
        "generation": list(
            GenerationSettings.objects.filter(campaign=campaign).values()
        ),
    }


@pytest.mark.django_db
def test_a_fresh_campaign_reads_as_the_loops_defaults_without_writing() -> None:
    """With no policy and no generation row, the settings are the defaults the
    scheduler and the generation loop create, and reading creates nothing."""
    campaign = CampaignFactory()
    with CaptureQueriesContext(connection) as queries:
        settings = campaign_settings_get(campaign=campaign)
    assert not any(
        q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        for q in queries.captured_queries
    )
    assert not settings.policy_stored and not settings.generation_stored
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()

    policies_ensure()
    stored_policy = TrainingPolicy.objects.get(campaign=campaign)
    stored_generation = generation_settings_for(campaign)
    for name in (
        "enabled",
        "pipeline",
        "min_new_preferences",
        "min_interval_minutes",
        "base_model_id",
        "config_overrides",
        "tie_policy",
    ):
        assert getattr(settings.policy, name) == getattr(stored_policy, name), name
    for field in GenerationSettings._meta.concrete_fields:
        if field.name in ("id", "campaign", "created_at", "updated_at"):
            continue
        assert getattr(settings.generation, field.attname) == getattr(
            stored_generation, field.attname
        ), field.name


@pytest.mark.django_db
def test_update_changes_only_the_named_fields_and_creates_missing_rows(
    make_user: Any,
) -> None:
    campaign = CampaignFactory(overlap_k=1, gold_rate=0.1)
    alice, bob = make_user(ANNOTATOR, "alice"), make_user(ANNOTATOR, "bob")
    base = BaseModelVersion.objects.create(name="other-base", source="/m/other")

    settings = campaign_settings_update(
        campaign=campaign,
        campaign_fields={"overlap_k": 3, "annotators": ["bob", "alice", "bob"]},
        training_fields={
            "min_new_preferences": 5,
            "base_model": base,
            "config_overrides": {"dpo": {"learning_rate": 0.0005, "beta": 0.2}},
        },
        generation_fields={"temperature": 0.3, "auto_promote": False},
    )

    campaign.refresh_from_db()
    assert (campaign.overlap_k, campaign.gold_rate) == (3, 0.1)
    assert set(campaign.annotators.all()) == {alice, bob}
    assert settings.annotators == ["alice", "bob"]
    policy = TrainingPolicy.objects.get(campaign=campaign)
    assert policy.min_new_preferences == 5 and policy.base_model == base
    assert policy.config_overrides == {"dpo": {"learning_rate": 0.0005, "beta": 0.2}}
    assert policy.min_interval_minutes == 10 and policy.pipeline == "dpo"
    row = GenerationSettings.objects.get(campaign=campaign)
    assert row.temperature == 0.3 and row.auto_promote is False
    assert row.top_p == 0.9 and row.samples_per_prompt == 2
    assert settings.policy_stored and settings.generation_stored

    campaign_settings_update(campaign=campaign, generation_fields={"top_p": 0.5})
    row.refresh_from_db()
    assert (row.temperature, row.top_p, row.auto_promote) == (0.3, 0.5, False)
    assert TrainingPolicy.objects.get(campaign=campaign).min_new_preferences == 5


@pytest.mark.django_db
def test_one_invalid_field_changes_none_of_the_three_tables(make_user: Any) -> None:
    """Valid campaign and training changes plus one bad generation field: the
    error names the field under its section, and no row changes or appears."""
    make_user(ANNOTATOR, "carol")
    campaign = CampaignFactory(overlap_k=1)
    before = _snapshot(campaign)

    with pytest.raises(CampaignSettingsInvalid, match="nothing was changed") as exc:
        campaign_settings_update(
            campaign=campaign,
            campaign_fields={"overlap_k": 4, "annotators": ["carol"]},
            training_fields={"enabled": False, "min_new_preferences": 7},
            generation_fields={"priority": 50, "temperature": 0.0},
        )

    assert exc.value.errors == {
        "generation": {"temperature": ["Must be greater than 0."]}
    }
    assert _snapshot(campaign) == before
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_existing_rows_are_left_as_they_were_after_a_refusal() -> None:
    campaign = CampaignFactory()
    policies_ensure()
    generation_settings_for(campaign)
    before = _snapshot(campaign)
    with pytest.raises(CampaignSettingsInvalid):
        campaign_settings_update(
            campaign=campaign,
            campaign_fields={"gold_rate": 0.2},
            training_fields={"min_new_preferences": 0},
            generation_fields={"seed": 3},
        )
    assert _snapshot(campaign) == before


@pytest.mark.django_db
def test_every_invalid_field_is_named_by_section(make_user: Any) -> None:
    make_user(ANNOTATOR, "dave")
    campaign = CampaignFactory()
    with pytest.raises(CampaignSettingsInvalid) as exc:
        campaign_settings_update(
            campaign=campaign,
            campaign_fields={
                "overlap_k": 0,
                "gold_rate": 0.9,
                "lease_ttl_seconds": 5,
                "label_edit_minutes": 5000,
                "status": "sleeping",
                "annotators": ["zed", "dave", "amy"],
            },
            training_fields={
                "pipeline": "magic",
                "min_new_preferences": 0,
                "tie_policy": "coin",
                "config_overrides": {"dpo": {"beta": -1}, "nope": {}},
            },
            generation_fields={
                "temperature": -1.0,
                "top_p": 1.5,
                "samples_per_prompt": 1,
                "max_extra_degenerate": 2.0,
                "max_length_ratio": 0.0,
                "max_nll_increase": -0.1,
                "max_new_tokens": 0,
                "gate_min_comparisons": 0,
                "bootstrap_prompts": 0,
                "tempreature": 1.0,
            },
        )
    errors = exc.value.errors
    assert set(errors["campaign"]) == {
        "overlap_k",
        "gold_rate",
        "lease_ttl_seconds",
        "label_edit_minutes",
        "status",
        "annotators",
    }
    assert errors["campaign"]["annotators"] == ["Unknown usernames: amy, zed."]
    assert set(errors["training"]) == {
        "pipeline",
        "min_new_preferences",
        "tie_policy",
        "config_overrides",
    }
    overrides = " ".join(errors["training"]["config_overrides"])
    assert "dpo:" in overrides and "beta" in overrides and "nope:" in overrides
    assert set(errors["generation"]) == {
        "temperature",
        "top_p",
        "samples_per_prompt",
        "max_extra_degenerate",
        "max_length_ratio",
        "max_nll_increase",
        "max_new_tokens",
        "gate_min_comparisons",
        "bootstrap_prompts",
        "tempreature",
    }
    assert errors["generation"]["samples_per_prompt"] == ["Must be at least 2."]
    assert errors["generation"]["tempreature"] == ["Not a setting of this section."]


@pytest.mark.django_db
def test_an_empty_annotator_list_opens_the_campaign_to_every_annotator(
    make_user: Any,
) -> None:
    user = make_user(ANNOTATOR, "erin")
    campaign = CampaignFactory()
    campaign.annotators.set([user])
    settings = campaign_settings_update(
        campaign=campaign, campaign_fields={"annotators": []}
    )
    assert settings.annotators == [] and not campaign.annotators.exists()


@pytest.mark.django_db
def test_settings_are_reachable_by_reviewers_only_and_missing_ids_are_404(
    make_user: Any,
) -> None:
    from core.exceptions import NotFound, PermissionDenied

    campaign = CampaignFactory()
    for role in (REVIEWER, ADMIN):
        user = make_user(role)
        assert settings_campaign_get(user=user, campaign_id=campaign.pk) == campaign
    with pytest.raises(PermissionDenied, match="reviewer"):
        settings_campaign_get(user=make_user(ANNOTATOR), campaign_id=campaign.pk)
    with pytest.raises(NotFound):
        settings_campaign_get(user=make_user(ADMIN), campaign_id=campaign.pk + 1000)
