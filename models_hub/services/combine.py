"""Combining adapters: a new policy candidate made from weighted parents.

``combine_job_create`` refuses what cannot be combined (with the reason, a
400) before anything is queued: parents of other campaigns, base models or
roles, non-LoRA adapters, and what PEFT's configs cannot take
(``ml.combine.combine_check`` reads each parent's ``adapter_config.json``,
without torch). ``combine_job_execute`` runs on the gpu worker like a
training job: claimed QUEUED → RUNNING under a row lock, heartbeats, phases,
the result written to a temporary folder and registered, moved into place
and marked succeeded in one transaction. The new adapter is an ordinary
candidate: the next policy version, its parents recorded (the job's
``parents``, the registered event's evidence and ``Adapter.parent`` = the
first parent), and its candidate generation round queued as a trained
adapter's is, so golden outputs, pairs against the champion and the gate
follow.

The two reads (``combine_job_get``/``combine_job_list``) live here beside
the writes so the feature stays in one module.
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import close_old_connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.artifacts import ArtifactError, artifact_store
from core.enqueue import enqueue
from core.exceptions import ApplicationError, NotFound
from core.heartbeat import Heartbeat, worker_name
from core.jobs import jobs_fail_stale
from ml.combine import combine_adapters, combine_check
from models_hub.models import Adapter, AdapterEvent, CombineJob
from models_hub.services.generation import generation_round_enqueue
from models_hub.services.registry import (
    adapter_path,
    adapter_register,
    base_model_local_path,
)

logger = logging.getLogger(__name__)

COMBINE_METHOD = "combine"


class CombineRefused(ApplicationError):
    """These adapters cannot be combined this way (400, with the reason)."""


# ---------------------------------------------------------------- reads


def combine_job_get(*, job_id: int) -> CombineJob:
    job = (
        CombineJob.objects.select_related("campaign", "base_model", "adapter")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise NotFound("No combine job has this id.")
    return job


def combine_job_list(*, adapter: Adapter) -> QuerySet[CombineJob]:
    """The jobs that produced ``adapter``."""
    return CombineJob.objects.filter(adapter=adapter)


# ---------------------------------------------------------------- creating


def _parents(parents: Sequence[tuple[int, float]]) -> list[tuple[Adapter, float]]:
    ids = [adapter_id for adapter_id, _ in parents]
    if len(ids) < 2:
        raise CombineRefused("Pick at least two adapters to combine.")
    if len(set(ids)) != len(ids):
        raise CombineRefused("Each adapter may appear only once in a combination.")
    found = Adapter.objects.select_related("campaign", "base_model").in_bulk(ids)
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise CombineRefused(f"No adapter has id {', '.join(missing)}.")
    for adapter_id, weight in parents:
        if not math.isfinite(weight):
            raise CombineRefused(
                f"The weight of adapter {adapter_id} must be a finite number."
            )
    return [(found[adapter_id], float(weight)) for adapter_id, weight in parents]


def _refuse_mixed(adapters: Sequence[Adapter]) -> None:
    def names(attr: str) -> str:
        return ", ".join(f"{a.name} v{a.version}: {attr_of(a, attr)}" for a in adapters)

    def attr_of(adapter: Adapter, attr: str) -> str:
        value = getattr(adapter, attr)
        return str(value) if value is not None else "none"

    if len({a.role for a in adapters}) > 1:
        raise CombineRefused(
            f"The adapters have different roles ({names('role')}); a policy and a "
            "reward model cannot be combined."
        )
    if adapters[0].role != Adapter.Role.POLICY:
        raise CombineRefused(
            "Only policy adapters can be combined: the result becomes a policy "
            "candidate that writes outputs for comparison."
        )
    if len({a.base_model_id for a in adapters}) > 1:
        raise CombineRefused(
            f"The adapters are over different base models ({names('base_model')}); "
            "only adapters of one base combine."
        )
    if any(a.campaign_id is None for a in adapters) or (
        len({a.campaign_id for a in adapters}) > 1
    ):
        raise CombineRefused(
            f"The adapters belong to different campaigns ({names('campaign')}); "
            "the result is a candidate of one campaign, so its parents must be too."
        )
    not_lora = [a for a in adapters if a.peft_type.upper() != "LORA"]
    if not_lora:
        raise CombineRefused(
            "Only LoRA adapters combine; "
            + ", ".join(f"{a.name} v{a.version} is {a.peft_type}" for a in not_lora)
            + "."
        )


def combine_job_create(
    *,
    parents: Sequence[tuple[int, float]],
    method: str,
    density: float | None = None,
    name: str = "",
    actor: AbstractBaseUser | None = None,
) -> CombineJob:
    """Record a combine job for ``parents`` ((adapter id, weight), in order)
    and queue it on the gpu worker after commit.

    Raises ``CombineRefused`` (400) naming the reason when the adapters
    cannot be combined with ``method``: fewer than two or repeated, unknown
    ids, different roles, base models or campaigns, a non-policy or
    non-LoRA adapter, a method their configs cannot take (e.g. linear over
    different ranks), a density the method does not take or needs, or an
    adapter whose files are missing.
    """
    pairs = _parents(parents)
    adapters = [adapter for adapter, _ in pairs]
    _refuse_mixed(adapters)
    try:
        combine_check(
            adapter_dirs=[adapter_path(a) for a in adapters],
            weights=[w for _, w in pairs],
            method=method,
            density=density,
        )
    except ValueError as exc:
        reason = str(exc).replace(str(settings.STORAGE_ROOT), "")
        reason = reason.replace(str(settings.ARBITER_ARTIFACT_CACHE_DIR), "")
        raise CombineRefused(reason) from exc
    except ArtifactError as exc:
        raise CombineRefused(f"An adapter's files cannot be fetched: {exc}") from exc
    job = CombineJob(
        campaign=adapters[0].campaign,
        base_model=adapters[0].base_model,
        method=method,
        density=density,
        parents=[
            {"adapter": a.pk, "name": a.name, "version": a.version, "weight": w}
            for a, w in pairs
        ],
        name=name.strip(),
        phase="queued",
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    job.full_clean()
    with transaction.atomic():
        job.save()
        enqueue("models_hub.combine_job_run", job.pk)
    logger.info(
        "models_hub.combine.queued job=%s method=%s parents=%s",
        job.pk,
        method,
        [a.pk for a in adapters],
    )
    return job


# ---------------------------------------------------------------- running


def _phase(job_id: int, phase: str) -> None:
    CombineJob.objects.filter(pk=job_id).update(
        phase=phase, heartbeat_at=timezone.now(), updated_at=timezone.now()
    )


def _claim(job_id: int) -> CombineJob | None:
    with transaction.atomic():
        job = CombineJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != CombineJob.Status.QUEUED:
            return None
        job.status = CombineJob.Status.RUNNING
        job.started_at = job.heartbeat_at = timezone.now()
        job.worker = worker_name()
        job.phase = "loading"
        job.save(
            update_fields=[
                "status",
                "started_at",
                "heartbeat_at",
                "worker",
                "phase",
                "updated_at",
            ]
        )
        return job


def _fail(job: CombineJob, error: str) -> None:
    CombineJob.objects.filter(pk=job.pk, status=CombineJob.Status.RUNNING).update(
        status=CombineJob.Status.FAILED,
        phase="failed",
        error=error[-5000:],
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )


def combine_job_execute(*, job_id: int) -> None:
    """Run one combine job (the ``models_hub.combine_job_run`` task, on the
    gpu queue). A job that is not QUEUED (a redelivery) does nothing."""
    job = _claim(job_id)
    if job is None:
        logger.info("models_hub.combine.skip job=%s", job_id)
        return
    storage = Path(settings.STORAGE_ROOT)
    tmp = storage / "tmp" / f"combine-{job.pk}-{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Heartbeat(CombineJob, job.pk):
            adapters = Adapter.objects.in_bulk([p["adapter"] for p in job.parents])
            missing = [p["name"] for p in job.parents if p["adapter"] not in adapters]
            if missing:
                raise ValueError(f"parent adapters deleted: {', '.join(missing)}")
            info = combine_adapters(
                base_dir=base_model_local_path(job.base_model),
                adapters=[
                    (adapter_path(adapters[p["adapter"]]), float(p["weight"]))
                    for p in job.parents
                ],
                method=job.method,
                density=job.density,
                output_dir=tmp,
                on_event=lambda kind, payload: (
                    _phase(job.pk, payload["phase"]) if kind == "status" else None
                ),
            )
    except Exception as exc:  # noqa: BLE001 - process edge: record, clean up, never crash the worker
        logger.exception("models_hub.combine.failed job=%s", job.pk)
        close_old_connections()
        shutil.rmtree(tmp, ignore_errors=True)
        _fail(job, f"{type(exc).__name__}: {exc}")
        return
    close_old_connections()
    _register(job, tmp, info, first_parent=adapters[job.parents[0]["adapter"]])


def _register(
    job: CombineJob, tmp: Path, info: dict[str, Any], *, first_parent: Adapter
) -> None:
    relative = Path("adapters") / f"campaign-{job.campaign_id}" / f"combine-{job.pk}"
    store = artifact_store()
    final: Path | None = None
    lineage = {
        "combine_job": job.pk,
        "method": job.method,
        "density": job.density,
        "rank": info.get("rank"),
        "parents": job.parents,
    }
    try:
        # Object storage: uploaded before the row exists.
        key = store.stage(tmp, name=str(relative))
        with transaction.atomic():
            locked = CombineJob.objects.select_for_update().get(pk=job.pk)
            if locked.status != CombineJob.Status.RUNNING:
                raise RuntimeError(
                    f"job is {locked.status}; not registering its adapter"
                )
            adapter = adapter_register(
                campaign=job.campaign,
                base_model=job.base_model,
                method=COMBINE_METHOD,
                peft_type=str(info.get("peft_type", "LORA")),
                storage_path=key,
                metrics={},
                parent=first_parent,
            )
            if job.name:
                adapter.name = job.name
                adapter.save(update_fields=["name", "updated_at"])
            AdapterEvent.objects.filter(
                adapter=adapter, action=AdapterEvent.Action.REGISTERED
            ).update(
                reason=(
                    f"combined ({job.method}) from "
                    + ", ".join(
                        f"{p['name']} v{p['version']} × {p['weight']:g}"
                        for p in job.parents
                    )
                )[:500],
                evidence=lineage,
            )
            final = store.commit(tmp, key)
            locked.status = CombineJob.Status.SUCCEEDED
            locked.phase = "done"
            locked.adapter = adapter
            locked.finished_at = timezone.now()
            locked.save(
                update_fields=[
                    "status",
                    "phase",
                    "adapter",
                    "finished_at",
                    "updated_at",
                ]
            )
            generation_round_enqueue(adapter=adapter)
    except Exception as exc:  # noqa: BLE001 - process edge: nothing half-registered survives
        logger.exception("models_hub.combine.register_failed job=%s", job.pk)
        shutil.rmtree(final if final is not None else tmp, ignore_errors=True)
        _fail(job, f"registering the adapter failed: {exc}")
        return
    logger.info("models_hub.combine.succeeded job=%s adapter=%s", job.pk, adapter.pk)


def combine_job_sweep_stale(*, timeout_seconds: int | None = None) -> int:
    """Fail RUNNING combine jobs whose worker stopped sending heartbeats."""
    return jobs_fail_stale(
        model=CombineJob,
        error=lambda job, timeout: (
            f"The worker running this job ({job.worker or 'unknown'}) stopped "
            f"sending heartbeats for more than {timeout} s; it was probably "
            "killed. No adapter was registered; combine again."
        ),
        timeout_seconds=timeout_seconds,
        also_set={"phase": "failed"},
        log_name="models_hub.combine.stale",
    )
