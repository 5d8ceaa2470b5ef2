"""Running one training job on a GPU worker.

The runner writes into a temporary folder; the adapter is registered, moved
into place and the job marked succeeded in one transaction, only after the
run returned successfully. A failed or cancelled run leaves no adapter row and
no files. Called by the ``training.job_run`` task (a process edge).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from core.heartbeat import Heartbeat
from models_hub.models import BaseModelVersion
from models_hub.services.generation import generation_round_enqueue
from models_hub.services.registry import (
    BUILTIN_SMOLLM2,
    adapter_path,
    adapter_register,
    base_model_local_path,
)
from training.models import TrainingJob, TrainingMetric
from training.services.jobs import pipeline_job_finished
from training.services.snapshots import snapshot_data_dir

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
CANCEL_POLL_SECONDS = 1.0
LOG_TAIL_LINES = 60


class JobReporter:
    """The runner's ``on_event``/``should_stop``, backed by PostgreSQL, plus a
    heartbeat thread so a long model load or step still counts as alive.

    Progress, metrics and the log tail are buffered and written at most once
    per ``FLUSH_SECONDS`` (and on the last step and at ``close()``): a commit
    per optimizer step would slow short steps by a fifth (see
    benchmarks/training_overhead.py). A phase change (the runner's
    ``("status", {"phase": ...})`` events) is written at once with whatever
    else is buffered: a handful per run, so it adds no write per step."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.started = time.monotonic()
        self.log: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._last_poll = 0.0
        self._last_flush = 0.0
        self._cancel = False
        self._progress: dict[str, Any] | None = None
        self._phase: str | None = None
        self._phase_seen = ""
        self._training_started: float | None = None
        self._metrics: list[TrainingMetric] = []
        self._log_dirty = False
        self._heartbeat = Heartbeat(TrainingJob, job_id)

    def close(self) -> None:
        self._heartbeat.stop()
        self.flush()

    def flush(self) -> None:
        """Write what was buffered; called from the training thread."""
        self._last_flush = time.monotonic()
        if self._metrics:
            TrainingMetric.objects.bulk_create(self._metrics)
            self._metrics = []
        fields: dict[str, Any] = {}
        if self._progress is not None:
            fields.update(self._progress)
            self._progress = None
        if self._phase is not None:
            fields["phase"] = self._phase
            self._phase = None
        if self._log_dirty:
            fields["log_tail"] = "\n".join(self.log)
            self._log_dirty = False
        if fields:
            TrainingJob.objects.filter(pk=self.job_id).update(
                heartbeat_at=timezone.now(), **fields
            )

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        last_step = False
        if kind == "progress":
            step, total = int(payload.get("step", 0)), int(payload.get("total", 0))
            # From the start of training: loading the models says nothing
            # about how long the remaining steps take.
            elapsed = time.monotonic() - (self._training_started or self.started)
            eta = (
                int(elapsed / step * (total - step)) if step and total >= step else None
            )
            self._progress = {
                "progress_step": step,
                "progress_total": total,
                "eta_seconds": eta,
            }
            last_step = bool(total) and step >= total
        elif kind == "metrics":
            step = int(payload.get("step", 0))
            metrics = payload.get("metrics", {})
            self._metrics.extend(
                TrainingMetric(
                    job_id=self.job_id, step=step, name=name, value=float(value)
                )
                for name, value in metrics.items()
            )
            self._log(
                f"step {step}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            )
        elif kind == "status":
            phase = str(payload.get("phase", ""))
            if phase == self._phase_seen:
                return  # the runner repeats the phase the task already reported
            self._phase_seen = phase
            self._log(phase)
            # "cancelled" is a status, not a phase: the job keeps the phase it
            # stopped in.
            if phase in TrainingJob.Phase.values:
                self._phase = phase
            if phase == TrainingJob.Phase.TRAINING:
                self._training_started = time.monotonic()
            last_step = True  # phase changes are rare and worth showing at once
        if last_step or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def _log(self, line: str) -> None:
        self.log.append(f"{timezone.now():%H:%M:%S} {line}")
        self._log_dirty = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            self._cancel = TrainingJob.objects.filter(
                pk=self.job_id, cancel_requested=True
            ).exists()
        return self._cancel


def _claim(job_id: int) -> TrainingJob | None:
    """QUEUED → RUNNING under a row lock. A redelivered or duplicate message
    finds another status and does nothing."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != TrainingJob.Status.QUEUED:
            logger.info(
                "training.job.skip job=%s status=%s", job_id, job and job.status
            )
            return None
        now = timezone.now()
        job.status = TrainingJob.Status.RUNNING
        job.started_at = job.heartbeat_at = now
        job.worker = f"{socket.gethostname()}:{os.getpid()}"
        job.save(
            update_fields=[
                "status",
                "started_at",
                "heartbeat_at",
                "worker",
                "updated_at",
            ]
        )
        return job


def _finish(
    job: TrainingJob,
    status: str,
    *,
    error: str = "",
    metrics: dict[str, float] | None = None,
) -> None:
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != TrainingJob.Status.RUNNING:
            return  # the sweeper got there first
        locked.status = status
        locked.error = error[-5000:]
        locked.finished_at = timezone.now()
        locked.final_metrics = metrics or {}
        locked.save(
            update_fields=[
                "status",
                "error",
                "finished_at",
                "final_metrics",
                "updated_at",
            ]
        )
        pipeline_job_finished(job=locked)


def runtime_config(job: TrainingJob) -> dict[str, Any]:
    config = dict(job.config)
    config["base_model"] = base_model_local_path(job.base_model)
    if settings.ARBITER_TORCH_THREADS and not config.get("torch_threads"):
        config["torch_threads"] = settings.ARBITER_TORCH_THREADS
    if job.reward_adapter is not None:
        config["reward_adapter"] = str(adapter_path(job.reward_adapter))
        config["reward_base"] = base_model_local_path(job.reward_adapter.base_model)
    return config


def _needs_conversion(base: BaseModelVersion) -> bool:
    """Whether the built-in base is still to be converted from its GGUF (the
    folder ``base_model_local_path`` fills on first use lacks its marker)."""
    if base.source != BUILTIN_SMOLLM2:
        return False
    from ml import smollm2

    folder = Path(settings.DATA_DIR) / "models" / smollm2.FOLDER_NAME
    return not (folder / smollm2.MARKER).is_file()


def training_job_execute(*, job_id: int) -> None:
    job = _claim(job_id)
    if job is None:
        return
    storage = Path(settings.STORAGE_ROOT)
    tmp = storage / "tmp" / f"job-{job.pk}-{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    reporter = JobReporter(job.pk)
    try:
        bases = [job.base_model]
        if job.reward_adapter is not None:
            bases.append(job.reward_adapter.base_model)
        if any(_needs_conversion(base) for base in bases):
            reporter.on_event("status", {"phase": TrainingJob.Phase.CONVERTING})
        config = runtime_config(job)
        # Loading starts here, not at the runner's first event: importing the
        # training stack alone takes seconds.
        reporter.on_event("status", {"phase": TrainingJob.Phase.LOADING})
        # Inside the try: a worker whose training stack cannot load fails the
        # job with the reason instead of leaving it running for the sweeper.
        from ml import runners

        result = runners.run(
            job.method,
            config,
            data_dir=snapshot_data_dir(job.snapshot, job.method),
            output_dir=tmp,
            on_event=reporter.on_event,
            should_stop=reporter.should_stop,
        )
    except Exception as exc:  # noqa: BLE001 - process edge: record, clean up, never crash the worker
        logger.exception("training.job.failed job=%s", job.pk)
        reporter.close()
        shutil.rmtree(tmp, ignore_errors=True)
        _finish(job, TrainingJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    reporter.close()
    close_old_connections()
    if result.cancelled:
        shutil.rmtree(tmp, ignore_errors=True)
        _finish(job, TrainingJob.Status.CANCELLED, metrics=result.metrics)
        logger.info("training.job.cancelled job=%s", job.pk)
        return
    _register(job, tmp, result)


def _register(job: TrainingJob, tmp: Path, result: Any) -> None:
    storage = Path(settings.STORAGE_ROOT)
    relative = (
        Path("adapters")
        / f"campaign-{job.campaign_id}"
        / f"job-{job.pk}-{result.method}"
    )
    final = storage / relative
    moved = False
    try:
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
            if locked.status != TrainingJob.Status.RUNNING:
                raise RuntimeError(
                    f"job is {locked.status}; not registering its adapter"
                )
            adapter = adapter_register(
                campaign=job.campaign,
                base_model=job.base_model,
                method=job.method,
                peft_type=result.peft_type,
                storage_path=str(relative),
                metrics=result.metrics,
                parent=job.parent_adapter,
            )
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(final)
            moved = True
            locked.status = TrainingJob.Status.SUCCEEDED
            locked.phase = TrainingJob.Phase.DONE
            locked.adapter = adapter
            locked.finished_at = timezone.now()
            locked.final_metrics = result.metrics
            locked.progress_step = max(locked.progress_step, result.steps)
            locked.progress_total = max(locked.progress_total, result.steps)
            locked.eta_seconds = 0
            locked.save(
                update_fields=[
                    "status",
                    "phase",
                    "adapter",
                    "finished_at",
                    "final_metrics",
                    "progress_step",
                    "progress_total",
                    "eta_seconds",
                    "updated_at",
                ]
            )
            pipeline_job_finished(job=locked)
            generation_round_enqueue(adapter=adapter)
    except Exception as exc:  # noqa: BLE001 - process edge: nothing half-registered survives
        logger.exception("training.job.register_failed job=%s", job.pk)
        shutil.rmtree(final if moved else tmp, ignore_errors=True)
        _finish(
            job,
            TrainingJob.Status.FAILED,
            error=f"registering the adapter failed: {exc}",
        )
        return
    logger.info("training.job.succeeded job=%s adapter=%s", job.pk, adapter.pk)
