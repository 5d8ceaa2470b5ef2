"""One set of defaults, the memory check at launch, and relaunching."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN
from tests.conftest import PASSWORD
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingPipeline, TrainingPolicy
from training.services.jobs import (
    JobTooLarge,
    training_config_resolve,
    training_job_launch,
    training_job_plan,
)
from training.services.scheduler import scheduler_tick

SMALL = {"max_steps": 2, "max_length": 64, "logging_steps": 1}


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _estimate(base: Any, **fields: Any) -> int:
    config = training_config_resolve(campaign=None, method="dpo", overrides=fields)
    plan = training_job_plan(method="dpo", config=config, base_model=base, limit=10**15)
    assert plan.estimate is not None
    return plan.estimate.total


@pytest.mark.django_db
def test_config_layers_defaults_then_policy_then_the_launch(
    make_user: Any, tiny_base: Any
) -> None:
    """The campaign policy's overrides sit between the method's defaults and
    the launch's own; nested peft settings merge key by key."""
    campaign = labeled_campaign(make_user, pairs=8)
    TrainingPolicy.objects.create(
        campaign=campaign,
        config_overrides={
            "dpo": {"per_device_train_batch_size": 4, "max_length": 384},
            "sft": {"max_length": 99},
        },
    )
    config = training_config_resolve(
        campaign=campaign,
        method="dpo",
        overrides={"max_length": 128, "peft": {"r": 4}},
    )
    assert config["per_device_train_batch_size"] == 4  # policy
    assert config["max_length"] == 128  # launch beats policy
    assert config["peft"]["r"] == 4 and config["peft"]["lora_alpha"] == 32
    assert config["num_train_epochs"] == 3.0  # method default
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config={"max_steps": 2}
    )
    assert job.config["max_length"] == 384 and job.config["max_steps"] == 2


@pytest.mark.django_db
def test_a_launch_over_the_memory_limit_gets_a_smaller_micro_batch(
    make_user: Any, tiny_base: Any, settings: Any
) -> None:
    """Estimate above the limit: micro-batch halved until it fits, gradient
    accumulation doubled (same effective batch), and the job says so."""
    campaign = labeled_campaign(make_user, pairs=8)
    at_8 = _estimate(tiny_base, **SMALL, per_device_train_batch_size=8)
    at_2 = _estimate(tiny_base, **SMALL, per_device_train_batch_size=2)
    at_4 = _estimate(tiny_base, **SMALL, per_device_train_batch_size=4)
    assert at_2 < at_4 < at_8
    settings.ARBITER_WORKER_MEMORY_BYTES = (at_2 + at_4) // 2
    job = training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**SMALL, "per_device_train_batch_size": 8},
    )
    assert job.config["per_device_train_batch_size"] == 2
    assert job.config["gradient_accumulation_steps"] == 4
    assert job.memory_estimate_bytes == at_2
    assert "Adjusted to fit: micro-batch 8 → 2" in job.memory_note
    assert "gradient accumulation 1 → 4" in job.memory_note


@pytest.mark.django_db
def test_a_launch_that_cannot_fit_is_refused_with_the_estimate(
    make_user: Any, tiny_base: Any, settings: Any, api_client_for: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    at_1 = _estimate(tiny_base, **SMALL, per_device_train_batch_size=1)
    settings.ARBITER_WORKER_MEMORY_BYTES = at_1 // 2
    with pytest.raises(JobTooLarge, match=r"Estimated peak memory about .*Refused"):
        training_job_launch(
            campaign=campaign, method="dpo", created_by=None, config=SMALL
        )
    response = api_client_for(make_user(ADMIN)).post(
        reverse("api-training-job-list"),
        {"campaign": campaign.pk, "method": "dpo", "config": SMALL},
        format="json",
    )
    assert response.status_code == 400
    assert "micro-batch of one" in response.json()["detail"]
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_the_scheduler_adjusts_instead_of_failing(
    make_user: Any, tiny_base: Any, settings: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=10)
    TrainingPolicy.objects.create(
        campaign=campaign,
        pipeline="dpo",
        min_new_preferences=10,
        min_interval_minutes=0,
        config_overrides={"dpo": {**SMALL, "per_device_train_batch_size": 8}},
    )
    settings.ARBITER_WORKER_MEMORY_BYTES = (
        _estimate(tiny_base, **SMALL, per_device_train_batch_size=1) // 2
    )
    assert scheduler_tick() == 1
    job = TrainingJob.objects.get(campaign=campaign)
    assert TrainingPipeline.objects.get().triggered_by == "scheduler"
    assert job.config["per_device_train_batch_size"] == 1
    assert job.config["gradient_accumulation_steps"] == 8
    assert "the scheduler launched it at micro-batch 1" in job.memory_note


@pytest.mark.django_db
def test_launch_form_shows_what_will_run_as_json_with_the_estimate(
    make_user: Any, tiny_base: Any
) -> None:
    """The page shows the policy's values, not the method's bare defaults;
    the htmx preview POST recomputes it from the fields and launches nothing."""
    campaign = labeled_campaign(make_user, pairs=8)
    TrainingPolicy.objects.create(
        campaign=campaign,
        config_overrides={"dpo": {"per_device_train_batch_size": 4, "max_length": 384}},
    )
    client = _client(make_user(ADMIN))
    url = reverse("training:job-launch")
    page = client.get(url + f"?campaign={campaign.pk}").content.decode()
    assert "What will run" in page and "Estimated peak memory" in page
    assert "&quot;per_device_train_batch_size&quot;: 4" in page
    assert "&quot;max_length&quot;: 384" in page
    preview = client.post(
        url,
        {
            "campaign": campaign.pk,
            "method": "dpo",
            "config_json": '{"max_length": 64}',
            "preview": "1",
        },
        HTTP_HX_REQUEST="true",
    )
    fragment = preview.content.decode()
    assert preview.status_code == 200
    assert fragment.lstrip().startswith('<section id="job-preview"')
    start = fragment.index("{", fragment.index('id="job-preview-config"'))
    shown = json.loads(
        fragment[start : fragment.index("</pre>", start)].replace("&quot;", '"')
    )
    assert shown["max_length"] == 64 and shown["per_device_train_batch_size"] == 4
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_relaunch_with_the_suggested_smaller_batch(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    job = training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**SMALL, "per_device_train_batch_size": 4},
    )
    client = _client(make_user(ADMIN))
    url = reverse("training:job-relaunch", args=[job.pk])
    assert client.post(url).status_code == 302  # still queued: refused
    assert TrainingJob.objects.count() == 1
    TrainingJob.objects.filter(pk=job.pk).update(
        status="failed", error="killed by signal 9"
    )
    page = client.get(reverse("training:job-detail", args=[job.pk])).content.decode()
    assert "Relaunch with micro-batch 2 and gradient accumulation 2" in page
    response = client.post(url, {"smaller": "yes"})
    new = TrainingJob.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "training:job-detail", args=[new.pk]
    )
    assert new.config["per_device_train_batch_size"] == 2
    assert new.config["gradient_accumulation_steps"] == 2
    assert new.snapshot_id == job.snapshot_id and new.status == "queued"
    same = client.post(url)
    assert same.status_code == 302
    latest = TrainingJob.objects.order_by("-pk").first()
    assert latest is not None and latest.config == job.config
