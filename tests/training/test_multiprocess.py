"""Jobs of several processes, through a real gpu-multi worker, on CPU.

The worker starts ``torchrun --nproc_per_node 2`` (two ranks over gloo) as
its child; the contract is the one of one-process jobs: rank 0 reports,
cancel stops every rank, a rank that dies fails the job, and only a run
that succeeded leaves an adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from core.models import WorkerNode
from models_hub.models import Adapter
from tests.conftest import ROOT
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingMetric
from training.services.jobs import training_job_cancel, training_job_launch

FAST = {
    "per_device_train_batch_size": 2,
    "logging_steps": 1,
    "max_length": 64,
    "learning_rate": 5e-3,
}
NAME = "test-gpu-multi"


@pytest.fixture(scope="module")
def multi_worker(
    celery_workers: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Path]:
    """A real worker on the gpu-multi queue (its CPU cores are its slots),
    reporting every second."""
    log = tmp_path_factory.mktemp("celery-multi") / "gpu-multi.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "gpu-multi",
            "-n",
            f"{NAME}@%h",
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            "--logfile",
            str(log),
        ],
        env={**celery_workers["env"], "ARBITER_WORKER_BEAT_SECONDS": "1"},
        cwd=ROOT,
        start_new_session=True,
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while not any(
        name.startswith(f"{NAME}@")
        for reply in app.control.ping(timeout=1.0) or []
        for name in reply
    ):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"gpu-multi worker did not start: {log.read_text()}")
        time.sleep(0.3)
    yield log
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(job: TrainingJob, predicate: Any, timeout: float = 180) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if predicate(job):
            return job
        time.sleep(0.25)
    raise AssertionError(f"timed out; job is {job.status}: {job.error}\n{job.log_tail}")


def _launch(make_user: Any, **config: Any) -> TrainingJob:
    # A transactional test empties the tables: wait for the worker's next beat.
    deadline = time.monotonic() + 20
    while not WorkerNode.objects.filter(name__startswith=f"{NAME}@").exists():
        assert time.monotonic() < deadline, "the gpu-multi worker never reported"
        time.sleep(0.2)
    campaign = labeled_campaign(make_user, pairs=16)
    return training_job_launch(
        campaign=campaign,
        method="dpo",
        created_by=None,
        config={**FAST, **config},
        processes=2,
    )


def _ranks(launcher: int) -> dict[int, int]:
    """{rank: pid} of the processes the launcher started."""
    ranks = {}
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text()
    for pid in map(int, children.split()):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = pid
    return ranks


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _no_scratch(job: TrainingJob) -> bool:
    return not list((Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job.pk}-*"))


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_two_process_dpo_job_registers_one_adapter_that_plain_peft_loads(
    multi_worker: Path, make_user: Any, tiny_base: Any
) -> None:
    """Two ranks train one adapter: rank 0 alone reports and saves it, the
    loss falls, and PEFT loads it on the plain base."""
    job = _launch(make_user, num_train_epochs=3)
    job = _wait(job, lambda j: j.status not in ("queued", "running"))
    assert job.status == "succeeded", job.error
    assert job.processes == 2 and job.strategy == "ddp"
    assert job.placement.startswith(f"{NAME}@") and "2 CPU processes" in job.placement
    assert job.progress_step == job.progress_total >= 6
    losses = list(
        TrainingMetric.objects.filter(job=job, name="loss")
        .order_by("step")
        .values_list("step", "value")
    )
    steps = [step for step, _ in losses]
    assert len(steps) == len(set(steps)) == job.progress_total  # rank 0's alone
    assert losses[-1][1] < losses[0][1]
    assert Adapter.objects.count() == 1 and job.adapter is not None
    folder = Path(settings.STORAGE_ROOT) / job.adapter.storage_path
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base.source)
    model = PeftModel.from_pretrained(base, str(folder))
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert _no_scratch(job)


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_cancel_stops_both_ranks_within_a_step_and_leaves_nothing(
    multi_worker: Path, make_user: Any, tiny_base: Any
) -> None:
    job = _launch(make_user, max_steps=5000)
    job = _wait(job, lambda j: j.status == "running" and j.progress_step >= 2)
    ranks = _ranks(job.runner_pid)
    assert sorted(ranks) == [0, 1]
    training_job_cancel(job=job)
    job = _wait(job, lambda j: j.status != "running", timeout=60)
    assert job.status == "cancelled", job.error
    assert job.progress_step < 5000
    assert all(_gone(pid) for pid in [job.runner_pid, *ranks.values()])
    assert not Adapter.objects.exists()
    assert _no_scratch(job)


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_rank_killed_fails_the_job_with_its_stderr_and_no_adapter(
    multi_worker: Path, make_user: Any, tiny_base: Any
) -> None:
    job = _launch(make_user, max_steps=5000)
    job = _wait(job, lambda j: j.status == "running" and j.progress_step >= 2)
    ranks = _ranks(job.runner_pid)
    os.kill(ranks[1], signal.SIGKILL)
    job = _wait(job, lambda j: j.status != "running", timeout=60)
    assert job.status == "failed"
    assert "Rank 1 of 2" in job.error and "SIGKILL" in job.error
    # The tail of that rank's own stderr (its log lines carry its rank).
    assert "[rank 1]" in job.error or "[rank1]" in job.error
    assert all(_gone(pid) for pid in [job.runner_pid, *ranks.values()])
    assert not Adapter.objects.exists()
    assert _no_scratch(job)


def test_the_command_follows_the_processes_and_the_strategy(tmp_path: Path) -> None:
    """One process: the runner itself; several: torchrun (and on CPU always
    torchrun); a sharded strategy on GPUs: accelerate launch with its file."""
    from training.services.execute import LAUNCH_CONFIGS, runner_command

    common = {
        "method": "dpo",
        "config_path": tmp_path / "c.json",
        "data_dir": tmp_path,
        "workdir": tmp_path,
    }
    one = runner_command(**common)
    assert one[1:4] == ["-m", "ml.runners", "dpo"] and "--stop-file" not in one
    cpu = runner_command(**common, processes=2, strategy="zero3", gpu=False)
    assert cpu[2:4] == ["ml.runners.launch", "--parent-pid"]
    assert cpu[5:9] == [
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    assert "--stop-file" in cpu and "--rank-log-dir" in cpu
    gpu = runner_command(**common, processes=8, strategy="zero3", gpu=True)
    assert gpu[5:7] == ["accelerate.commands.launch", "--config_file"]
    assert Path(gpu[7]) == LAUNCH_CONFIGS / "zero3.yaml" and Path(gpu[7]).is_file()
    assert gpu[gpu.index("--num_processes") + 1] == "8"


def test_the_rank_that_died_is_read_from_the_launchers_summary() -> None:
    """A rank killed by a signal is the cause, not the rank torchrun then
    stopped with SIGTERM, whichever it observed first."""
    from training.services.execute import _rank_failure

    summary = """Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 11)  (SIGTERM)
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 12)  (SIGKILL)
"""
    assert _rank_failure(summary) == (1, -9)
    assert _rank_failure(summary.replace("-9 (pid: 12)", "1 (pid: 12)")) == (1, 1)
    cancelled = summary.replace("-15", "3").replace("-9", "3")
    assert _rank_failure(cancelled) is None
