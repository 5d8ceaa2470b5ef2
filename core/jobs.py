"""What every long job record (training, generation, combine) shares: the
sweep that fails RUNNING rows whose worker went silent, and the one that
sends QUEUED rows whose broker message was lost again.

A job model here has ``status`` (``Status.QUEUED``/``RUNNING``/``FAILED``),
``heartbeat_at``, ``worker``, ``finished_at``, ``error`` and ``created_at``.
Each app keeps its own wrapper (its error text, what else a failure does)
so callers and beat tasks keep their names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from core.enqueue import enqueue
from core.heartbeat import task_messages_pending

logger = logging.getLogger(__name__)


def jobs_fail_stale(
    *,
    model: type[models.Model],
    error: Callable[[Any, int], str],
    timeout_seconds: int | None = None,
    also_set: Mapping[str, Any] | None = None,
    after: Callable[[Any], None] | None = None,
    log_name: str,
) -> int:
    """Fail RUNNING rows of ``model`` whose heartbeat is older than
    ``timeout_seconds`` (default ``ARBITER_HEARTBEAT_TIMEOUT``): their worker
    died. ``error(job, timeout)`` is the message the job shows, ``also_set``
    more fields to write, and ``after(job)`` runs in the same transaction
    (a pipeline to close, scratch files to drop). Rows another transaction
    holds are skipped this round. Returns how many were failed."""
    status = model.Status  # type: ignore[attr-defined]
    timeout = timeout_seconds or settings.ARBITER_HEARTBEAT_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale_ids = list(
        model._default_manager.filter(
            status=status.RUNNING, heartbeat_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    failed = 0
    for job_id in stale_ids:
        with transaction.atomic():
            job = (
                model._default_manager.select_for_update(skip_locked=True)
                .filter(pk=job_id, status=status.RUNNING, heartbeat_at__lt=cutoff)
                .first()
            )
            if job is None:
                continue
            job.status = status.FAILED
            job.finished_at = timezone.now()
            job.error = error(job, timeout)
            for name, value in (also_set or {}).items():
                setattr(job, name, value)
            job.save(
                update_fields=[
                    "status",
                    "finished_at",
                    "error",
                    "updated_at",
                    *(also_set or {}),
                ]
            )
            if after is not None:
                after(job)
            failed += 1
            logger.warning("%s job=%s worker=%s", log_name, job.pk, job.worker)
    return failed


def jobs_redispatch_lost(
    *,
    model: type[models.Model],
    task: str,
    older_than_seconds: int | None = None,
    log_name: str,
    filters: Mapping[str, Any] | None = None,
) -> int:
    """Send ``task`` again for QUEUED rows of ``model`` (those matching
    ``filters`` when given: the rows that ``task`` runs) older than
    ``older_than_seconds`` (default ``ARBITER_REDISPATCH_AFTER``) whose
    message is neither waiting in a queue nor reserved by a worker: it was
    lost (Redis restarted without its data, the broker was down at launch, a
    purged queue). Safe to repeat: the task skips a row that is no longer
    QUEUED. Returns how many were sent; none when the broker cannot be read."""
    grace = (
        settings.ARBITER_REDISPATCH_AFTER
        if older_than_seconds is None
        else older_than_seconds
    )
    cutoff = timezone.now() - timedelta(seconds=grace)
    queued = list(
        model._default_manager.filter(
            status=model.Status.QUEUED,  # type: ignore[attr-defined]
            created_at__lte=cutoff,
            **(filters or {}),
        ).values_list("pk", flat=True)
    )
    if not queued:
        return 0
    pending = task_messages_pending(name=task)
    if pending is None:
        return 0
    sent = 0
    for job_id in queued:
        if (job_id,) in pending:
            continue
        enqueue(task, job_id)
        sent += 1
        logger.warning("%s job=%s", log_name, job_id)
    return sent
