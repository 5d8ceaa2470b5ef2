"""Launching, cancelling and sweeping training jobs; pipelines of jobs."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.enqueue import enqueue
from core.jobs import jobs_fail_stale, jobs_redispatch_lost
from core.workers import (
    GPU_QUEUES,
    MULTI_QUEUE,
    worker_node_words,
    worker_nodes_live,
)
from labeling.models import Campaign
from ml import memory
from ml.config import config_class, config_from_dict
from ml.runners import METHODS
from models_hub.models import Adapter, BaseModelVersion
from models_hub.selectors import campaign_reward_model
from models_hub.services.registry import BUILTIN_SMOLLM2, base_model_default
from training.exceptions import (
    InvalidTrainingConfig,
    JobNotCancellable,
    PipelineAlreadyRunning,
    TrainingError,
)
from training.models import (
    DatasetSnapshot,
    Strategy,
    TrainingJob,
    TrainingPipeline,
    TrainingPolicy,
)
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


class JobTooLarge(TrainingError):
    """Even a micro-batch of one would not fit the worker's memory."""


class JobCannotBePlaced(TrainingError):
    """No live worker has the processes (GPUs) or the strategy a job asks for."""


#: The task that runs a job of one process, and of several (its own queue).
JOB_TASK = "training.job_run"
JOB_TASK_MULTI = "training.job_run_multi"

#: Parameter counts above which a LoRA job needs several GPUs by default:
#: (most parameters, processes, strategy). An 8B base fits one 80 GB GPU in
#: bf16 (16 GB of weights); past ~15B the weights and activations crowd it,
#: and a 70B base (140 GB in bf16) needs its weights sharded over 8 GPUs
#: with ZeRO-3 (docs/multi-gpu.md has the arithmetic).
RESOURCE_DEFAULTS: tuple[tuple[float, int, str], ...] = (
    (15e9, 1, Strategy.DDP),
    (40e9, 4, Strategy.ZERO3),
    (float("inf"), 8, Strategy.ZERO3),
)


def training_resources_default(*, base_model: BaseModelVersion) -> tuple[int, str]:
    """(processes, strategy) that fit ``base_model``'s size: one process
    up to 15B parameters (or an unknown size), ZeRO-3 over 4 GPUs up to
    40B, over 8 beyond."""
    shape = base_model_shape(base_model)
    parameters = shape.parameters if shape is not None else 0
    for most, processes, strategy in RESOURCE_DEFAULTS:
        if parameters <= most:
            return processes, str(strategy)
    return 1, str(Strategy.DDP)


def training_resources_resolve(
    *,
    campaign: Campaign | None,
    base_model: BaseModelVersion,
    processes: int | None,
    strategy: str | None,
) -> tuple[int, str]:
    """What a job runs with: the launch's own ``processes``/``strategy``,
    else the campaign policy's, else what fits the base model's size."""
    policy = (
        TrainingPolicy.objects.filter(campaign=campaign).first()
        if campaign is not None and campaign.pk
        else None
    )
    default_processes, default_strategy = training_resources_default(
        base_model=base_model
    )
    if processes is None:
        processes = (policy.processes if policy else None) or default_processes
    if not strategy:
        strategy = (policy.strategy if policy else "") or (
            default_strategy if processes > 1 else str(Strategy.DDP)
        )
    if strategy not in Strategy.values:
        raise InvalidTrainingConfig(
            f"strategy must be one of {', '.join(Strategy.values)}."
        )
    return processes, strategy


def training_job_place(*, processes: int, strategy: str) -> None:
    """Refuse a job that no live worker can run: one of several processes
    needs a worker on the ``gpu-multi`` queue with that many GPUs (or, on a
    worker without a GPU, CPU cores) and the strategy. A job of one process
    is never refused here: any gpu worker runs it, as before. Raises
    ``JobCannotBePlaced`` naming the live workers and what they have."""
    if processes <= 1:
        return
    live = [node for node in worker_nodes_live() if set(node.queues) & set(GPU_QUEUES)]
    for node in live:
        if (
            MULTI_QUEUE in node.queues
            and node.process_slots >= processes
            and strategy in node.strategies
        ):
            return
    asked = f"{processes} GPUs (or {processes} CPU processes on a worker without a GPU)"
    if strategy != Strategy.DDP:
        asked += f" with {Strategy(strategy).label}"
    described = (
        "; ".join(worker_node_words(node) for node in live)
        if live
        else "none (no gpu worker has reported in the last minute)"
    )
    raise JobCannotBePlaced(
        f"This job asks for {asked}, and no live worker on the {MULTI_QUEUE} "
        f"queue has that. Live workers: {described}."
    )


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def training_config_resolve(
    *, campaign: Campaign | None, method: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """What a job of ``method`` in ``campaign`` runs with: the method's
    defaults (ml.config), then the campaign policy's ``config_overrides``
    for the method, then ``overrides`` (nested ``peft`` merged key by key).
    The one place the launch form, the API, pipelines and the scheduler get
    a config from. Raises ``InvalidTrainingConfig`` naming the field."""
    layered: dict[str, Any] = {}
    policy = (
        TrainingPolicy.objects.filter(campaign=campaign).first()
        if campaign is not None and campaign.pk
        else None
    )
    if policy is not None:
        from_policy = (policy.config_overrides or {}).get(method) or {}
        if isinstance(from_policy, Mapping):
            layered = _merge(layered, from_policy)
    layered = _merge(layered, overrides)
    return training_config_validate(method=method, overrides=layered)


def base_model_shape(base: BaseModelVersion) -> memory.ModelShape | None:
    """The base's sizes from its config.json, without converting or
    downloading anything: the built-in SmolLM2 uses its known shape until
    converted; a hub id that is not a local folder is unknown (None)."""
    if base.source == BUILTIN_SMOLLM2:
        from ml import smollm2

        folder = Path(settings.DATA_DIR) / "models" / smollm2.FOLDER_NAME
    else:
        folder = Path(base.source)
    try:
        return memory.model_shape(folder)
    except (OSError, ValueError):
        return memory.SMOLLM2_135M if base.source == BUILTIN_SMOLLM2 else None


def worker_memory_limit() -> int:
    """``ARBITER_WORKER_MEMORY_BYTES``, else what this machine or its cgroup
    has available now."""
    return settings.ARBITER_WORKER_MEMORY_BYTES or memory.available_memory()


@dataclass
class JobPlan:
    """A resolved config and how it fits the worker's memory.

    ``config`` is what will run (already adjusted when ``adjustment`` says
    so); ``refusal`` is set when even a micro-batch of one does not fit."""

    method: str
    config: dict[str, Any]
    limit: int
    estimate: memory.MemoryEstimate | None = None
    adjustment: str = ""
    refusal: str = ""
    shape_known: bool = True
    requested_estimate: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, indent=2, sort_keys=True)

    @property
    def summary(self) -> str:
        """One sentence for the job page and the form."""
        if not self.shape_known:
            return (
                "Memory not estimated: the base model's config.json is not on "
                "this machine."
            )
        assert self.estimate is not None
        text = (
            f"Estimated peak memory {self.estimate.describe()}; the worker has "
            f"{memory.format_bytes(self.limit)}."
        )
        if self.adjustment:
            text += " " + self.adjustment
        if self.refusal:
            text += " " + self.refusal
        return text


def _adjusted(method: str, config: dict[str, Any]) -> dict[str, Any] | None:
    smaller = memory.suggest_smaller_batch(
        config["per_device_train_batch_size"], config["gradient_accumulation_steps"]
    )
    if smaller is None:
        return None
    batch, accumulation = smaller
    candidate = {
        **config,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": accumulation,
    }
    try:
        return training_config_validate(method=method, overrides=candidate)
    except InvalidTrainingConfig:
        return None  # e.g. RLOO needs a multiple of num_generations


def training_job_plan(
    *,
    method: str,
    config: Mapping[str, Any],
    base_model: BaseModelVersion,
    limit: int | None = None,
) -> JobPlan:
    """Estimate the peak memory of a validated ``config`` and, when it
    exceeds the worker's memory, halve the micro-batch and double gradient
    accumulation (same effective batch) until it fits. Sets ``refusal``
    when a micro-batch of one still does not fit."""
    limit = limit or worker_memory_limit()
    plan = JobPlan(method=method, config=dict(config), limit=limit)
    shape = base_model_shape(base_model)
    if shape is None:
        plan.shape_known = False
        return plan

    def estimate(cfg: Mapping[str, Any]) -> memory.MemoryEstimate:
        placeholders: dict[str, Any] = {"base_model": "-"}
        if method in ("ppo", "rloo"):
            placeholders["reward_adapter"] = "-"
        return memory.estimate_peak_memory(
            config_from_dict(method, {**cfg, **placeholders}), shape
        )

    plan.estimate = estimate(plan.config)
    plan.requested_estimate = plan.estimate.total
    if plan.estimate.total <= limit:
        return plan
    first = plan.config
    current: dict[str, Any] | None = plan.config
    while current is not None and estimate(current).total > limit:
        current = _adjusted(method, current)
    if current is None:
        plan.refusal = (
            f"Refused: it needs {memory.format_bytes(plan.estimate.total)} and "
            f"even a micro-batch of one would exceed the worker's "
            f"{memory.format_bytes(limit)}; lower max_length or free memory."
        )
        return plan
    plan.config = current
    plan.estimate = estimate(current)
    plan.adjustment = (
        "Adjusted to fit: micro-batch "
        f"{first['per_device_train_batch_size']} → "
        f"{current['per_device_train_batch_size']}, gradient accumulation "
        f"{first['gradient_accumulation_steps']} → "
        f"{current['gradient_accumulation_steps']} (same effective batch; "
        f"{memory.format_bytes(plan.requested_estimate)} estimated as asked)."
    )
    return plan


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
    processes: int | None = None,
    strategy: str | None = None,
) -> TrainingJob:
    """Validate, record and enqueue a job on the ``gpu`` queue (after commit);
    a job of several ``processes`` goes to the ``gpu-multi`` queue, and is
    refused (``JobCannotBePlaced``) when no live worker there has them.
    ``processes``/``strategy`` left out come from the campaign policy, else
    from the base model's size (``training_resources_resolve``).

    Without ``snapshot`` a new one is taken of all labels so far. PPO and
    RLOO need ``reward_adapter``: the campaign's reward champion, else its
    newest reward adapter.

    The config is ``training_config_resolve``'s (defaults, campaign policy,
    ``config``). Memory policy, the same for the form, the API and the
    scheduler: a config whose estimated peak exceeds the worker's memory
    runs with a smaller micro-batch and more gradient accumulation, and the
    job says so (``memory_note``); when even a micro-batch of one does not
    fit, ``JobTooLarge`` refuses the launch with the estimate, except for a
    scheduler's pipeline, which launches at a micro-batch of one with the
    warning rather than stall the loop unseen.
    """
    validated = training_config_resolve(
        campaign=campaign, method=method, overrides=config or {}
    )
    base_model = base_model or base_model_default()
    processes, strategy = training_resources_resolve(
        campaign=campaign,
        base_model=base_model,
        processes=processes,
        strategy=strategy,
    )
    training_job_place(processes=processes, strategy=strategy)
    plan = training_job_plan(method=method, config=validated, base_model=base_model)
    if plan.refusal:
        if pipeline is None or pipeline.triggered_by != "scheduler":
            raise JobTooLarge(plan.summary)
        while (smaller := _adjusted(method, plan.config)) is not None:
            plan.config = smaller
        plan.refusal = ""
        plan.adjustment = (
            "Even a micro-batch of one is estimated above the worker's memory; "
            "the scheduler launched it at micro-batch "
            f"{plan.config['per_device_train_batch_size']} anyway (lower "
            "max_length in the campaign's training policy)."
        )
    validated = plan.config
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
        base_model=base_model,
        snapshot=snapshot,
        reward_adapter=reward_adapter if method in ("ppo", "rloo") else None,
        parent_adapter=parent_adapter,
        pipeline=pipeline,
        config=validated,
        created_by=created_by,
        memory_estimate_bytes=plan.estimate.total if plan.estimate else None,
        memory_note=plan.summary,
        processes=processes,
        strategy=strategy,
    )
    job.full_clean()
    job.save()

    enqueue(JOB_TASK_MULTI if processes > 1 else JOB_TASK, job.pk)
    logger.info("training.job.queued job=%s method=%s", job.pk, method)
    return job


def training_job_relaunch(
    *, job: TrainingJob, created_by: AbstractBaseUser | None, smaller: bool
) -> TrainingJob:
    """A new job with ``job``'s campaign, method, base, snapshot and config;
    with ``smaller``, half the micro-batch and twice the gradient
    accumulation (the suggestion made when a job ran out of memory). The
    launch checks memory again like any other."""
    if job.is_active:
        raise TrainingError(f"Job {job.pk} is still {job.status}.")
    config = dict(job.config)
    if smaller:
        adjusted = _adjusted(job.method, config)
        if adjusted is None:
            raise TrainingError(
                "The micro-batch is already 1; lower max_length instead."
            )
        config = adjusted
    return training_job_launch(
        campaign=job.campaign,
        method=job.method,
        created_by=created_by,
        config=config,
        base_model=job.base_model,
        snapshot=job.snapshot,
        reward_adapter=job.reward_adapter,
        parent_adapter=job.parent_adapter,
        processes=job.processes,
        strategy=job.strategy,
    )


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
    worker died), close their pipeline and drop their scratch folder.
    Returns how many were failed."""

    def error(job: TrainingJob, timeout: int) -> str:
        return (
            f"The worker running this job ({job.worker or 'unknown'}) stopped sending heartbeats "
            f"for more than {timeout} s (last at {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); it was "
            "probably killed or lost its machine. No adapter was registered."
        )

    def after(job: TrainingJob) -> None:
        pipeline_job_finished(job=job)
        _remove_scratch(job.pk)

    return jobs_fail_stale(
        model=TrainingJob,
        error=error,
        timeout_seconds=timeout_seconds,
        after=after,
        log_name="training.job.stale",
    )


def training_job_redispatch_lost(*, older_than_seconds: int | None = None) -> int:
    """Send ``training.job_run`` (``training.job_run_multi`` for jobs of
    several processes) again for QUEUED jobs whose message was lost
    (``core.jobs.jobs_redispatch_lost``). Returns how many were sent."""
    return jobs_redispatch_lost(
        model=TrainingJob,
        task=JOB_TASK,
        older_than_seconds=older_than_seconds,
        log_name="training.job.redispatched",
        filters={"processes__lte": 1},
    ) + jobs_redispatch_lost(
        model=TrainingJob,
        task=JOB_TASK_MULTI,
        older_than_seconds=older_than_seconds,
        log_name="training.job.redispatched",
        filters={"processes__gt": 1},
    )


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
