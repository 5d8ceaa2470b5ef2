from __future__ import annotations

from celery import shared_task

from training.services.execute import training_job_execute
from training.services.jobs import (
    training_job_redispatch_lost,
    training_job_sweep_stale,
)
from training.services.scheduler import scheduler_tick


@shared_task(name="training.job_run", acks_late=True, ignore_result=True)
def training_job_run(job_id: int) -> None:
    """Run one job on the gpu queue. Idempotent: only a QUEUED job starts."""
    training_job_execute(job_id=job_id)


@shared_task(name="training.job_run_multi", acks_late=True, ignore_result=True)
def training_job_run_multi(job_id: int) -> None:
    """Run one job of several processes on the gpu-multi queue (the same
    service; only the queue differs, so only a worker with the GPUs or
    CPU slots takes it). Idempotent like ``training.job_run``."""
    training_job_execute(job_id=job_id)


@shared_task(name="training.sweep_stale_jobs", ignore_result=True)
def training_sweep_stale_jobs() -> int:
    """Fail RUNNING jobs whose worker died; send QUEUED jobs whose message
    was lost again. Returns how many rows it acted on."""
    return training_job_sweep_stale() + training_job_redispatch_lost()


@shared_task(name="training.scheduler_tick", ignore_result=True)
def training_scheduler_tick() -> int:
    return scheduler_tick()
