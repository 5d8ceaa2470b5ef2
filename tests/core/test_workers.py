"""Workers say what they have; a job that asks for more than any live
worker offers is refused at launch, naming what exists."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.models import WorkerNode
from core.roles import ADMIN, REVIEWER
from core.workers import capabilities_probe, worker_node_report
from models_hub.models import BaseModelVersion
from tests.conftest import PASSWORD
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingPolicy
from training.services.jobs import (
    JobCannotBePlaced,
    training_job_launch,
    training_job_place,
    training_resources_default,
)

H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30}


def _node(
    name: str, *, gpus: int = 0, cpus: int = 2, age: float = 0, **kw: Any
) -> WorkerNode:
    now = timezone.now() - timedelta(seconds=age)
    defaults = {
        "host": name,
        "pid": 1,
        "queues": ["gpu", "gpu-multi"],
        "gpus": [H100] * gpus,
        "cpu_count": cpus,
        "memory_bytes": 64 * 2**30,
        "process_slots": gpus or cpus,
        "strategies": ["ddp", "fsdp", "zero2", "zero3"] if gpus else ["ddp"],
        "started_at": now,
        "heartbeat_at": now,
    }
    return WorkerNode.objects.create(name=f"gpu@{name}", **{**defaults, **kw})


@pytest.fixture
def fleet(db: None) -> None:
    _node("gpu-1", gpus=2)
    _node("cpu-box", cpus=2)
    _node("big-but-gone", gpus=8, age=3600)  # silent for an hour: not counted


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.django_db
def test_a_job_asking_more_gpus_than_any_live_worker_has_is_refused_naming_them(
    fleet: None, make_user: Any, api_client_for: Any
) -> None:
    """The API answers 400 with the live workers and what they have, and
    records nothing; a job that fits is accepted with its resources."""
    campaign = labeled_campaign(make_user, pairs=4)
    api = api_client_for(make_user(ADMIN))
    url = reverse("api-training-job-list")
    refused = api.post(
        url,
        {"campaign": campaign.pk, "method": "dpo", "processes": 4},
        format="json",
    )
    assert refused.status_code == 400, refused.content
    detail = refused.json()["detail"]
    assert "asks for 4 GPUs" in detail
    assert "gpu-1 (2 × NVIDIA H100 80GB HBM3" in detail
    assert "cpu-box (0 GPUs, 2 CPU processes)" in detail
    assert "big-but-gone" not in detail
    assert not TrainingJob.objects.exists()
    accepted = api.post(
        url,
        {"campaign": campaign.pk, "method": "dpo", "processes": 2},
        format="json",
    )
    assert accepted.status_code == 201, accepted.content
    assert accepted.json()["processes"] == 2 and accepted.json()["strategy"] == "ddp"
    assert TrainingJob.objects.get().processes == 2


@pytest.mark.django_db
def test_placement_needs_the_strategy_and_the_multi_queue(fleet: None) -> None:
    """ZeRO-3 needs a worker that can run it; a worker off the gpu-multi
    queue takes no multi-process job; one process is never refused."""
    training_job_place(processes=2, strategy="zero3")  # gpu-1 has DeepSpeed
    WorkerNode.objects.filter(name="gpu@gpu-1").update(strategies=["ddp"])
    with pytest.raises(JobCannotBePlaced, match="with DeepSpeed ZeRO-3"):
        training_job_place(processes=2, strategy="zero3")
    WorkerNode.objects.update(queues=["gpu"])
    with pytest.raises(JobCannotBePlaced, match="single-process jobs only"):
        training_job_place(processes=2, strategy="ddp")
    WorkerNode.objects.all().delete()
    training_job_place(processes=1, strategy="ddp")
    with pytest.raises(JobCannotBePlaced, match="Live workers: none"):
        training_job_place(processes=2, strategy="ddp")


@pytest.mark.django_db
def test_the_launch_form_shows_the_refusal(fleet: None, make_user: Any) -> None:
    campaign = labeled_campaign(make_user, pairs=4)
    response = _client(make_user(ADMIN)).post(
        reverse("training:job-launch"),
        {"campaign": campaign.pk, "method": "dpo", "processes": "8"},
    )
    assert b"asks for 8 GPUs" in response.content
    assert b"cpu-box (0 GPUs, 2 CPU processes)" in response.content
    assert not TrainingJob.objects.exists()


def _base(tmp_path: Path, name: str, **config: Any) -> BaseModelVersion:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "vocab_size": 128256, **config})
    )
    return BaseModelVersion.objects.create(name=name, source=str(folder))


@pytest.mark.django_db
def test_resources_default_to_what_fits_the_base_models_size(tmp_path: Path) -> None:
    """8B: one GPU; 70B: ZeRO-3 over 8."""
    llama8 = _base(
        tmp_path,
        "llama-8b",
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
    )
    llama70 = _base(
        tmp_path,
        "llama-70b",
        hidden_size=8192,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        intermediate_size=28672,
    )
    assert training_resources_default(base_model=llama8) == (1, "ddp")
    assert training_resources_default(base_model=llama70) == (8, "zero3")


@pytest.mark.django_db
def test_workers_report_and_show_to_admins_only(
    make_user: Any, api_client_for: Any
) -> None:
    """A worker's report (here: this machine's) is listed live in the API
    and on the page; a worker without a GPU counts CPU processes."""
    probe = capabilities_probe()
    worker_node_report(
        name="gpu@here", queues=["gpu", "gpu-multi"], capabilities=probe, started=True
    )
    _node("gone", age=3600)
    admin = make_user(ADMIN)
    rows = {
        row["name"]: row for row in api_client_for(admin).get("/api/v1/workers/").json()
    }
    here = rows["gpu@here"]
    assert here["live"] and here["takes_multi_process_jobs"]
    assert here["process_slots"] == (len(probe.gpus) or probe.cpu_count)
    if not probe.gpus:
        assert here["strategies"] == ["ddp"]
        assert f"0 GPUs, {probe.cpu_count} CPU processes" in here["description"]
    assert rows["gpu@gone"]["live"] is False
    assert (
        api_client_for(make_user(REVIEWER)).get("/api/v1/workers/").status_code == 403
    )
    page = _client(admin).get(reverse("core:workers"))
    assert page.status_code == 200
    assert b"gpu@here" in page.content and b"silent" in page.content
    assert _client(make_user(REVIEWER)).get(reverse("core:workers")).status_code == 403


@pytest.mark.django_db
def test_the_campaign_policy_sets_the_resources_a_launch_leaves_out(
    fleet: None, make_user: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=4)
    TrainingPolicy.objects.create(campaign=campaign, processes=2)
    job = training_job_launch(campaign=campaign, method="dpo", created_by=None)
    assert (job.processes, job.strategy) == (2, "ddp")
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, processes=1
    )
    assert job.processes == 1


@pytest.mark.django_db
def test_the_scheduler_skips_a_policy_no_live_worker_can_run(
    fleet: None, make_user: Any
) -> None:
    """A policy asking for 8 GPUs where the largest live worker has 2 starts
    nothing (and the tick goes on to other campaigns)."""
    from training.models import TrainingPipeline
    from training.services.scheduler import scheduler_tick

    campaign = labeled_campaign(make_user, pairs=4)
    TrainingPolicy.objects.create(campaign=campaign, processes=8, min_new_preferences=1)
    assert scheduler_tick() == 0
    assert not TrainingPipeline.objects.exists() and not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_a_worker_leaves_a_job_larger_than_itself_queued_for_another(
    fleet: None, make_user: Any
) -> None:
    """Placement only knows that *some* live worker on the gpu-multi queue
    fits the job; any of them may take its message. One with fewer process
    slots (or without the strategy) leaves it QUEUED, unclaimed, for the
    redispatch to send again, instead of starting more ranks than it has."""
    from training.services.execute import training_job_execute

    _node("gpu-8", gpus=8)
    campaign = labeled_campaign(make_user, pairs=4)
    slots = capabilities_probe().process_slots
    assert slots < 8
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, processes=8
    )
    training_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.QUEUED
    assert job.worker == "" and job.started_at is None
