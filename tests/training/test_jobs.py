"""Training jobs through the API and a real Celery GPU worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, REVIEWER
from models_hub.models import Adapter, BaseModelVersion
from models_hub.services.registry import BUILTIN_SMOLLM2
from tests.training.conftest import labeled_campaign
from training.exceptions import (
    InvalidTrainingConfig,
    JobNotCancellable,
    PipelineAlreadyRunning,
)
from training.models import (
    TrainingJob,
    TrainingMetric,
    TrainingPipeline,
    TrainingPolicy,
)
from training.services.execute import (
    JobReporter,
    _needs_conversion,
    training_job_execute,
)
from training.services.jobs import (
    pipeline_launch,
    training_config_validate,
    training_job_cancel,
    training_job_launch,
    training_job_sweep_stale,
)
from training.services.scheduler import scheduler_tick
from training.services.snapshots import dataset_snapshot_create

FAST = {
    "max_steps": 6,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
    "max_length": 64,
}


def _wait(job: TrainingJob, predicate: Any, timeout: float = 120) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if predicate(job):
            return job
        time.sleep(0.25)
    raise AssertionError(f"timed out; job is {job.status}: {job.error}\n{job.log_tail}")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(InvalidTrainingConfig, match="learning_rate"):
        training_config_validate(method="dpo", overrides={"learning_rate": -1})
    with pytest.raises(InvalidTrainingConfig, match="colour"):
        training_config_validate(method="dpo", overrides={"colour": 1})
    with pytest.raises(InvalidTrainingConfig, match="base_model"):
        training_config_validate(method="dpo", overrides={"base_model": "/etc"})
    assert (
        training_config_validate(method="reward", overrides={})["learning_rate"] > 1e-5
    )


@pytest.mark.django_db
def test_cancelling_a_queued_job_is_immediate_and_final(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config=FAST
    )
    job = training_job_cancel(job=job)
    assert job.status == TrainingJob.Status.CANCELLED
    with pytest.raises(JobNotCancellable):
        training_job_cancel(job=job)


@pytest.mark.django_db
def test_rl_methods_need_a_reward_model(make_user: Any, tiny_base: Any) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    with pytest.raises(Exception, match="needs a reward model"):
        training_job_launch(
            campaign=campaign, method="rloo", created_by=None, config={}
        )
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_sweeper_fails_jobs_with_a_stale_heartbeat(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config=FAST
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running",
        heartbeat_at=timezone.now() - timezone.timedelta(minutes=10),
        worker="gone:1",
    )
    fresh = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config=FAST
    )
    TrainingJob.objects.filter(pk=fresh.pk).update(
        status="running", heartbeat_at=timezone.now()
    )
    assert training_job_sweep_stale(timeout_seconds=60) == 1
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.status == "failed" and "stopped sending heartbeats" in job.error
    assert fresh.status == "running"


@pytest.mark.django_db
def test_scheduler_launches_exactly_once_at_its_threshold(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=10)
    policy = TrainingPolicy.objects.create(
        campaign=campaign,
        enabled=True,
        pipeline="dpo",
        min_new_preferences=11,
        min_interval_minutes=0,
    )
    assert scheduler_tick() == 0  # 10 labels < 11
    policy.min_new_preferences = 10
    policy.save()
    assert scheduler_tick() == 1
    assert scheduler_tick() == 0  # its pipeline is still running
    assert TrainingPipeline.objects.filter(campaign=campaign).count() == 1
    assert TrainingJob.objects.filter(campaign=campaign, method="dpo").count() == 1
    with pytest.raises(PipelineAlreadyRunning):
        pipeline_launch(campaign=campaign, kind="dpo")
    TrainingPipeline.objects.update(status="succeeded")
    assert scheduler_tick() == 0  # no new labels since the snapshot


@pytest.mark.django_db
def test_training_api_roles_and_validation(
    make_user: Any, api_client_for: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    reviewer, admin = (
        api_client_for(make_user(REVIEWER)),
        api_client_for(make_user(ADMIN)),
    )
    url = reverse("api-training-job-list")
    body = {"campaign": campaign.pk, "method": "dpo", "config": FAST}
    assert reviewer.post(url, body, format="json").status_code == 403
    bad = admin.post(url, {**body, "config": {"beta": "high"}}, format="json")
    assert bad.status_code == 400 and "beta" in bad.json()["detail"]
    assert not TrainingJob.objects.exists()
    assert reviewer.get(reverse("api-training-config", args=["dpo"])).status_code == 200
    assert reviewer.get(url).status_code == 200


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_job_trains_on_a_real_worker_and_registers_its_adapter(
    celery_workers: Any, make_user: Any, api_client_for: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=16)
    admin = api_client_for(make_user(ADMIN))
    response = admin.post(
        reverse("api-training-job-list"),
        {"campaign": campaign.pk, "method": "dpo", "config": FAST},
        format="json",
    )
    assert response.status_code == 201, response.content
    seen: list[str] = []

    def finished(j: TrainingJob) -> bool:
        if not seen or seen[-1] != j.phase:
            seen.append(j.phase)
        return j.status not in ("queued", "running")

    job = _wait(TrainingJob.objects.get(pk=response.json()["id"]), finished)
    assert job.status == "succeeded", job.error
    # What a page polling the row saw: phases only ever move forward.
    order = list(TrainingJob.Phase.values)
    assert seen == sorted(seen, key=order.index) and seen[-1] == "done"
    assert set(seen) <= set(order) and "converting" not in seen
    adapter = job.adapter
    assert adapter is not None and adapter.role == "policy" and adapter.version == 1
    folder = Path(settings.STORAGE_ROOT) / adapter.storage_path
    assert (folder / "adapter_config.json").exists() and (
        folder / "adapter_model.safetensors"
    ).exists()
    assert job.progress_step == job.progress_total == 6
    assert job.phase == TrainingJob.Phase.DONE
    # Each phase change is logged once, in the order the run went through them.
    phases = [line.split(" ", 1)[1] for line in job.log_tail.splitlines()]
    phases = [p for p in phases if not p.startswith("step ")]
    assert phases == ["loading", "training", "evaluating", "saving", "done"]
    assert TrainingMetric.objects.filter(job=job, name="loss").exists()
    detail = admin.get(reverse("api-training-job-detail", args=[job.pk])).json()
    assert detail["status"] == "succeeded" and detail["adapter_id"] == adapter.pk
    assert not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_the_next_job_runs_in_the_spare_the_worker_started_after_the_last(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    """ARBITER_WARM_RUNNER: once a job's runner exits, the worker starts a
    spare runner (``python -m ml.runners --warm``) that imports the training
    stack ahead of time; the next job is handed to that very process and
    trains and registers as a cold start does."""
    campaign = labeled_campaign(make_user, pairs=16)

    def run_one() -> TrainingJob:
        job = training_job_launch(
            campaign=campaign, method="dpo", created_by=None, config=FAST
        )
        job = _wait(job, lambda j: j.status not in ("queued", "running"))
        assert job.status == "succeeded", job.error
        return job

    run_one()
    worker = celery_workers["processes"]["gpu"].pid
    deadline = time.monotonic() + 30
    spares: list[int] = []
    while not spares and time.monotonic() < deadline:
        spares = _spares_under(worker)
        time.sleep(0.2)
    assert len(spares) == 1, "no spare runner waits under the gpu worker"
    second = run_one()
    assert second.runner_pid == spares[0]
    assert second.adapter is not None and second.progress_step == 6


def _spares_under(root: int) -> list[int]:
    """Pids of ``ml.runners --warm`` processes descending from ``root``."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry.name)] = command
    found = []
    for pid, command in commands.items():
        if "ml.runners --warm" not in command:
            continue
        up = pid
        while up in parents and up not in (0, 1, root):
            up = parents[up]
        if up == root:
            found.append(pid)
    return found


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_job_within_a_step_and_leaves_nothing(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=16)
    job = training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**FAST, "max_steps": 5000},
    )
    job = _wait(job, lambda j: j.status == "running" and j.progress_step >= 2)
    training_job_cancel(job=job)
    job = _wait(job, lambda j: j.status != "running", timeout=30)
    assert job.status == "cancelled"
    assert job.progress_step < 5000
    assert not Adapter.objects.exists()
    assert not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_run_leaves_a_failed_job_and_no_adapter(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=16)
    job = training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**FAST, "max_steps": 5000},
    )
    job = _wait(job, lambda j: j.status == "running" and j.progress_step >= 2)
    pid = int(job.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    time.sleep(3)
    # The redelivered message finds the job RUNNING and does nothing; the
    # sweeper (beat, every 30 s) fails it once the heartbeat is stale.
    assert training_job_sweep_stale(timeout_seconds=2) == 1
    job.refresh_from_db()
    assert job.status == "failed" and "stopped sending heartbeats" in job.error
    time.sleep(2)
    job.refresh_from_db()
    assert job.status == "failed"
    assert not Adapter.objects.exists()
    assert not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_reward_then_rloo_pipeline_chains_on_the_worker(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=16)
    # Three labeled prompts held out: no snapshot exports them, and the
    # reward model's test metrics are measured on them at registration.
    held_out = list(
        campaign.prompts.filter(split="train")
        .order_by("id")
        .values_list("id", flat=True)
    )[:3]
    campaign.prompts.filter(pk__in=held_out).update(split="test")
    small = {
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "max_length": 64,
    }
    pipeline = pipeline_launch(
        campaign=campaign,
        kind="reward_rloo",
        config_overrides={
            "reward": small,
            "rloo": {**small, "num_generations": 2, "max_completion_length": 8},
        },
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pipeline.refresh_from_db()
        if pipeline.status != "running":
            break
        time.sleep(0.5)
    jobs = list(TrainingJob.objects.filter(pipeline=pipeline).order_by("id"))
    assert pipeline.status == "succeeded", [(j.method, j.status, j.error) for j in jobs]
    assert [j.method for j in jobs] == ["reward", "rloo"]
    assert jobs[1].reward_adapter_id == jobs[0].adapter_id
    assert jobs[0].adapter.role == "reward" and jobs[1].adapter.role == "policy"
    reward_metrics = jobs[0].adapter.metrics
    assert reward_metrics["test_pairs"] == 3
    assert 0.0 <= reward_metrics["test_accuracy"] <= 1.0
    assert "eval_accuracy" in reward_metrics or "eval_loss" in reward_metrics


@pytest.mark.django_db
def test_the_reporter_stores_phases_with_its_progress_writes(
    make_user: Any, tiny_base: Any, django_assert_num_queries: Any
) -> None:
    """A phase change is written at once, in the same UPDATE as buffered
    progress; steps within a flush window write nothing; a repeated phase
    and the runner's "cancelled" (a status, not a phase) change nothing; the
    ETA counts from the start of training, not of loading."""
    campaign = labeled_campaign(make_user, pairs=8)
    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config=FAST
    )
    reporter = JobReporter(job.pk)
    try:
        with django_assert_num_queries(1):
            reporter.on_event("status", {"phase": "loading", "train_rows": 8})
        job.refresh_from_db()
        assert job.phase == "loading" and job.heartbeat_at is not None
        time.sleep(1.1)  # a slow model load must not inflate the ETA
        with django_assert_num_queries(1):
            reporter.on_event("status", {"phase": "training"})
            reporter.on_event("progress", {"step": 1, "total": 40})
            reporter.on_event("progress", {"step": 2, "total": 40})
        with django_assert_num_queries(0):
            reporter.on_event("status", {"phase": "training"})
        job.refresh_from_db()
        assert job.phase == "training" and job.progress_step == 0  # buffered
        with django_assert_num_queries(1):
            reporter.on_event("status", {"phase": "cancelled", "step": 2})
    finally:
        reporter.close()
    job.refresh_from_db()
    assert job.phase == "training" and job.progress_step == 2
    # Timed from the start of training: 38 steps left at a few ms a step.
    assert job.eta_seconds is not None and job.eta_seconds < 10
    assert job.log_tail.splitlines()[-1].endswith(" cancelled")


@pytest.mark.django_db
def test_only_an_unconverted_builtin_base_reports_converting(
    settings: Any, tmp_path: Path
) -> None:
    """The job says "converting" only while the built-in SmolLM2 folder has
    no completion marker yet; any other base loads straight away."""
    from ml import smollm2

    settings.DATA_DIR = str(tmp_path)
    builtin = BaseModelVersion(name="builtin", source=BUILTIN_SMOLLM2)
    assert _needs_conversion(builtin)
    folder = tmp_path / "models" / smollm2.FOLDER_NAME
    folder.mkdir(parents=True)
    assert _needs_conversion(builtin)  # a half-written folder is not converted
    (folder / smollm2.MARKER).write_text("done", encoding="utf-8")
    assert not _needs_conversion(builtin)
    assert not _needs_conversion(BaseModelVersion(name="hub", source="org/model"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_runner_killed_by_sigkill_fails_the_job_with_its_last_memory(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    """The run is a child of the worker: killing it fails the job at once
    (no heartbeat wait) with the signal and the memory last sampled, and the
    worker lives on."""
    campaign = labeled_campaign(make_user, pairs=16)
    job = training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**FAST, "max_steps": 5000},
    )
    job = _wait(
        job,
        lambda j: j.status == "running" and j.progress_step >= 1 and j.rss_bytes,
    )
    worker_pid = int(job.worker.rsplit(":", 1)[1])
    assert job.runner_pid and job.runner_pid != worker_pid
    os.kill(job.runner_pid, signal.SIGKILL)
    job = _wait(job, lambda j: j.status != "running", timeout=30)
    assert job.status == "failed"
    assert "killed by signal 9 (SIGKILL)" in job.error
    assert "its last measured memory was" in job.error and " MB" in job.error
    assert job.peak_rss_bytes and job.peak_rss_bytes >= job.rss_bytes > 0
    os.kill(worker_pid, 0)  # the worker process is still there
    assert not Adapter.objects.exists()
    assert not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.django_db(transaction=True)
def test_a_runner_growing_past_the_memory_limit_is_reported_out_of_memory(
    make_user: Any, tiny_base: Any, settings: Any
) -> None:
    """With ARBITER_WORKER_MEMORY_BYTES set below what the run needs, the
    worker's watchdog kills the child and the job says out of memory, with
    the figures and a smaller batch to relaunch with."""
    campaign = labeled_campaign(make_user, pairs=16)
    # A row without a queued message: a session's Celery worker must not
    # take this run from the test.
    job = TrainingJob.objects.create(
        campaign=campaign,
        method="dpo",
        base_model=tiny_base,
        snapshot=dataset_snapshot_create(campaign=campaign, created_by=None),
        config=training_config_validate(method="dpo", overrides=FAST),
    )
    # The runtime alone (torch, transformers) is several times this.
    settings.ARBITER_WORKER_MEMORY_BYTES = 120 * 1024 * 1024
    training_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("Out of memory: it used ")
    assert "over the worker's limit of 120 MB" in job.error
    assert "killed by signal 9 (SIGKILL)" in job.error
    assert "Relaunch with a micro-batch of 2 and gradient accumulation 2" in job.error
    assert job.rss_bytes and job.rss_bytes > 120 * 1024 * 1024
    assert not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_whose_message_was_lost_is_sent_again_and_trains(
    celery_workers: Any, make_user: Any, tiny_base: Any
) -> None:
    """A QUEUED job whose message waits is left alone; once the gpu queue
    lost it (purged, as by a Redis restart without its data) the sweep
    sends it again, once, and the worker trains it to an adapter."""
    from core.heartbeat import task_messages_pending
    from tests.broker import gpu_queue_paused, queue_purge
    from training.services.jobs import training_job_redispatch_lost

    campaign = labeled_campaign(make_user, pairs=16)
    with gpu_queue_paused(celery_workers):
        job = training_job_launch(
            campaign=campaign, method="dpo", created_by=None, config=FAST
        )
        assert (job.pk,) in task_messages_pending(name="training.job_run")
        assert training_job_redispatch_lost(older_than_seconds=0) == 0
        queue_purge("gpu")
        assert training_job_redispatch_lost(older_than_seconds=3600) == 0
        assert training_job_redispatch_lost(older_than_seconds=0) == 1
        assert training_job_redispatch_lost(older_than_seconds=0) == 0

    job = _wait(job, lambda j: j.status not in ("queued", "running"))
    assert job.status == "succeeded", job.error
    assert job.adapter is not None
    assert training_job_redispatch_lost(older_than_seconds=0) == 0
