"""Launching, cancelling and sweeping training jobs; pipelines of jobs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.enqueue import enqueue
from core.heartbeat import task_messages_pending
from labeling.models import Campaign
from ml.config import config_class, config_from_dict
from ml.runners import METHODS
from models_hub.models import Adapter, BaseModelVersion
from models_hub.selectors import campaign_reward_model
from models_hub.services.registry import base_model_default
from training.exceptions import (
    InvalidTrainingConfig,
    JobNotCancellable,
    PipelineAlreadyRunning,
    TrainingError,
)
from training.models import DatasetSnapshot, TrainingJob, TrainingPipeline
from training.services.snapshots import dataset_snapshot_create

logger = logging.getLogger(__name__)

# Filled in on the worker, never by the user.
RUNTIME_KEYS = {"base_model", "reward_adapter", "reward_base"}
PIPELINE_FIRST_METHOD = {
    "dpo": "dpo",
    "sft": "sft",
    "reward_ppo": "reward",
    "reward_rloo": "reward",
}
PIPELINE_SECOND_METHOD = {"reward_ppo": "ppo", "reward_rloo": "rloo"}


def training_config_validate(
    *, method: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults + ``overrides`` → a validated config dict (without the paths
    that the worker fills in). Raises ``InvalidTrainingConfig`` naming the
    field."""
    if method not in METHODS:
        raise InvalidTrainingConfig(f"method must be one of {', '.join(METHODS)}.")
    bad = RUNTIME_KEYS & set(overrides)
    if bad:
        raise InvalidTrainingConfig(
            f"config.{sorted(bad)[0]}: set by Arbiter, not in the job config."
        )
    placeholders: dict[str, Any] = {"base_model": "(resolved on the worker)"}
    if method in ("ppo", "rloo"):
        placeholders["reward_adapter"] = "(resolved on the worker)"
    try:
        config = config_from_dict(method, {**dict(overrides), **placeholders})
    except (ValueError, TypeError) as exc:
        raise InvalidTrainingConfig(f"config: {exc}") from None
    data = config.to_dict()
    for key in RUNTIME_KEYS:
        data.pop(key, None)
    return data


def training_config_defaults(method: str) -> dict[str, Any]:
    return training_config_validate(method=method, overrides={})


def training_config_fields(method: str) -> list[dict[str, Any]]:
    """Field names, defaults and help texts, for forms and the API."""
    import dataclasses

    cls = config_class(method)
    defaults = training_config_defaults(method)
    return [
        {
            "name": f.name,
            "default": defaults.get(f.name),
            "help": f.metadata.get("help", ""),
        }
        for f in dataclasses.fields(cls)
        if f.name not in RUNTIME_KEYS
    ]


@transaction.atomic
def training_job_launch(
    *,
    campaign: Campaign,
    method: str,
    created_by: AbstractBaseUser | None,
    config: Mapping[str, Any] | None = None,
    base_model: BaseModelVersion | None = None,
    snapshot: DatasetSnapshot | None = None,
    reward_adapter: Adapter | None = None,
    pipeline: TrainingPipeline | None = None,
    parent_adapter: Adapter | None = None,
) -> TrainingJob:
    """Validate, record and enqueue a job on the ``gpu`` queue (after commit).

    Without ``snapshot`` a new one is taken of all labels so far. PPO and
    RLOO need ``reward_adapter``: the campaign's reward champion, else its
    newest reward adapter.
    """
    validated = training_config_validate(method=method, overrides=config or {})
    if snapshot is None:
        snapshot = dataset_snapshot_create(campaign=campaign, created_by=created_by)
    elif snapshot.campaign_id != campaign.pk:
        raise TrainingError("That snapshot belongs to another campaign.")
    if method in ("ppo", "rloo"):
        if reward_adapter is None:
            reward_adapter = campaign_reward_model(campaign=campaign)
        if reward_adapter is None:
            raise TrainingError(
                f"{method.upper()} needs a reward model: train one first (method 'reward')."
            )
        if reward_adapter.role != Adapter.Role.REWARD:
            raise TrainingError("reward_adapter must be a reward model.")
    job = TrainingJob(
        campaign=campaign,
        method=method,
        base_model=base_model or base_model_default(),
        snapshot=snapshot,
        reward_adapter=reward_adapter if method in ("ppo", "rloo") else None,
        parent_adapter=parent_adapter,
        pipeline=pipeline,
        config=validated,
        created_by=created_by,
    )
    job.full_clean()
    job.save()

    enqueue("training.job_run", job.pk)
    logger.info("training.job.queued job=%s method=%s", job.pk, method)
    return job


@transaction.atomic
def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Queued jobs are cancelled at once; running ones stop cooperatively
    within a training step (the runner polls ``cancel_requested``)."""
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.status == TrainingJob.Status.QUEUED:
        job.status = TrainingJob.Status.CANCELLED
        job.finished_at = timezone.now()
        job.cancel_requested = True
        job.save(
            update_fields=["status", "finished_at", "cancel_requested", "updated_at"]
        )
        pipeline_job_finished(job=job)
    elif job.status == TrainingJob.Status.RUNNING:
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested", "updated_at"])
    else:
        raise JobNotCancellable(f"The job already {job.status}.")
    return job


def training_job_sweep_stale(*, timeout_seconds: int | None = None) -> int:
    """Fail RUNNING jobs whose heartbeat is older than the timeout (their
    worker died). Returns how many were failed."""
    timeout = timeout_seconds or settings.ARBITER_HEARTBEAT_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    failed = 0
    stale_ids = list(
        TrainingJob.objects.filter(
            status=TrainingJob.Status.RUNNING, heartbeat_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    for job_id in stale_ids:
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(skip_locked=True)
                .filter(
                    pk=job_id,
                    status=TrainingJob.Status.RUNNING,
                    heartbeat_at__lt=cutoff,
                )
                .first()
            )
            if job is None:
                continue
            job.status = TrainingJob.Status.FAILED
            job.finished_at = timezone.now()
            job.error = (
                f"The worker running this job ({job.worker or 'unknown'}) stopped sending heartbeats "
                f"for more than {timeout} s (last at {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); it was "
                "probably killed or lost its machine. No adapter was registered."
            )
            job.save(update_fields=["status", "finished_at", "error", "updated_at"])
            pipeline_job_finished(job=job)
            _remove_scratch(job.pk)
            failed += 1
            logger.warning("training.job.stale job=%s worker=%s", job.pk, job.worker)
    return failed


def training_job_redispatch_lost(*, older_than_seconds: int | None = None) -> int:
    """Send ``training.job_run`` again for QUEUED jobs older than
    ``older_than_seconds`` (default ``ARBITER_REDISPATCH_AFTER``) whose
    message is neither waiting in the gpu queue nor reserved by a worker:
    it was lost (Redis restarted without its data, the broker was down when
    the job was launched, the queue was purged). Safe to repeat: a job that
    is no longer QUEUED when the message arrives is skipped by the task.
    Returns how many were sent; none when the broker cannot be read."""
    grace = (
        settings.ARBITER_REDISPATCH_AFTER
        if older_than_seconds is None
        else older_than_seconds
    )
    cutoff = timezone.now() - timedelta(seconds=grace)
    queued = list(
        TrainingJob.objects.filter(
            status=TrainingJob.Status.QUEUED, created_at__lte=cutoff
        ).values_list("pk", flat=True)
    )
    if not queued:
        return 0
    pending = task_messages_pending(name="training.job_run")
    if pending is None:
        return 0
    sent = 0
    for job_id in queued:
        if (job_id,) in pending:
            continue
        enqueue("training.job_run", job_id)
        sent += 1
        logger.warning("training.job.redispatched job=%s", job_id)
    return sent


def _remove_scratch(job_id: int) -> None:
    """A killed worker leaves its half-written adapter in tmp/; drop it."""
    for scratch in (Path(settings.STORAGE_ROOT) / "tmp").glob(f"job-{job_id}-*"):
        shutil.rmtree(scratch, ignore_errors=True)


@transaction.atomic
def pipeline_launch(
    *,
    campaign: Campaign,
    kind: str,
    created_by: AbstractBaseUser | None = None,
    base_model: BaseModelVersion | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    tie_policy: str = "skip",
    triggered_by: str = "manual",
) -> TrainingPipeline:
    """Snapshot the labels and start the pipeline's first job. Refuses while
    the campaign's previous pipeline is still running."""
    if kind not in TrainingPipeline.Kind.values:
        raise TrainingError(
            f"pipeline must be one of {', '.join(TrainingPipeline.Kind.values)}."
        )
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    if TrainingPipeline.objects.filter(
        campaign=campaign, status=TrainingPipeline.Status.RUNNING
    ).exists():
        raise PipelineAlreadyRunning(
            "This campaign's previous pipeline is still running."
        )
    overrides = dict(config_overrides or {})
    snapshot = dataset_snapshot_create(
        campaign=campaign, created_by=created_by, tie_policy=tie_policy
    )
    pipeline = TrainingPipeline(
        campaign=campaign,
        kind=kind,
        snapshot=snapshot,
        config_overrides=overrides,
        triggered_by=triggered_by,
    )
    pipeline.full_clean()
    pipeline.save()
    method = PIPELINE_FIRST_METHOD[kind]
    training_job_launch(
        campaign=campaign,
        method=method,
        created_by=created_by,
        config=overrides.get(method, {}),
        base_model=base_model,
        snapshot=snapshot,
        pipeline=pipeline,
    )
    return pipeline


def pipeline_job_finished(*, job: TrainingJob) -> None:
    """Advance or close the job's pipeline. Call inside the transaction that
    gave the job its final status."""
    if job.pipeline_id is None:
        return
    pipeline = TrainingPipeline.objects.select_for_update().get(pk=job.pipeline_id)
    if pipeline.status != TrainingPipeline.Status.RUNNING:
        return
    if job.status == TrainingJob.Status.SUCCEEDED:
        next_method = PIPELINE_SECOND_METHOD.get(pipeline.kind)
        if job.method == "reward" and next_method:
            training_job_launch(
                campaign=pipeline.campaign,
                method=next_method,
                created_by=job.created_by,
                config=pipeline.config_overrides.get(next_method, {}),
                base_model=job.base_model,
                snapshot=pipeline.snapshot,
                reward_adapter=job.adapter,
                pipeline=pipeline,
            )
            return
        pipeline.status = TrainingPipeline.Status.SUCCEEDED
    elif job.status == TrainingJob.Status.CANCELLED:
        pipeline.status = TrainingPipeline.Status.CANCELLED
    else:
        pipeline.status = TrainingPipeline.Status.FAILED
    pipeline.save(update_fields=["status", "updated_at"])
