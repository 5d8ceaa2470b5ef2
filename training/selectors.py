from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from core import charts
from core.exceptions import NotFound
from core.heartbeat import HEARTBEAT_SECONDS, worker_words
from training.models import TrainingJob, TrainingMetric


def training_job_list(*, campaign_id: int | None = None) -> QuerySet[TrainingJob]:
    qs = TrainingJob.objects.select_related(
        "campaign", "base_model", "adapter", "pipeline"
    ).order_by("-created_at")
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    return qs


def training_job_get(*, job_id: int) -> TrainingJob:
    job = training_job_list().filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such training job.")
    return job


def training_job_metric_series(
    *, job: TrainingJob
) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, step, value in (
        TrainingMetric.objects.filter(job=job)
        .order_by("name", "step", "id")
        .values_list("name", "step", "value")
    ):
        series[name].append((step, value))
    return dict(series)


# The charts a person looks for, each with its train and eval series. Keys are
# TRL's log names as the runners report them (ml/callbacks.py); a method logs
# only some of them, and a chart without points stays hidden until one comes.
_STEP = charts.axis("step", "optimizer steps")
METRIC_GROUPS: tuple[tuple[str, str, charts.Axis, dict[str, tuple[str, ...]]], ...] = (
    (
        "loss",
        "Loss",
        charts.axis("loss", "nats"),
        {"train": ("loss",), "eval": ("eval_loss",)},
    ),
    (
        "margin",
        "Reward margins",
        charts.axis("margin", "reward"),
        {
            "train": ("rewards/margins", "margin"),
            "eval": ("eval_rewards/margins", "eval_margin"),
        },
    ),
    (
        "accuracy",
        "Accuracy",
        charts.axis("accuracy", "fraction correct", lo=0, hi=1),
        {
            "train": ("rewards/accuracies", "accuracy", "mean_token_accuracy"),
            "eval": (
                "eval_rewards/accuracies",
                "eval_accuracy",
                "eval_mean_token_accuracy",
            ),
        },
    ),
    (
        "reward",
        "Reward",
        charts.axis("score", "reward"),
        {"train": ("objective/scores", "reward"), "eval": ("eval_reward",)},
    ),
    (
        "kl",
        "KL to the reference model",
        charts.axis("KL divergence", "nats"),
        {"train": ("objective/kl", "kl"), "eval": ("eval_kl",)},
    ),
    (
        "learning_rate",
        "Learning rate",
        charts.axis("learning rate"),
        {"train": ("learning_rate",)},
    ),
)
GROUPED_KEYS = frozenset(
    key for *_, splits in METRIC_GROUPS for keys in splits.values() for key in keys
)
METRIC_FEED_LIMIT = 5000


def _metric_order(name: str) -> tuple[int, str]:
    """Keys of the named charts in chart order, then the rest by name."""
    for index, (*_, splits) in enumerate(METRIC_GROUPS):
        if any(name in keys for keys in splits.values()):
            return (index, name)
    return (len(METRIC_GROUPS), name)


def metric_words(name: str) -> str:
    """A metric key as a person reads it: ``eval_loss`` → "eval loss",
    ``rewards/margins`` → "train reward margins"; other keys with spaces
    for underscores."""
    for _, title, _, splits in METRIC_GROUPS:
        for split, keys in splits.items():
            if name in keys:
                words = title[0].lower() + title[1:]
                return words if len(splits) == 1 else f"{split} {words}"
    return name.replace("_", " ")


def training_job_metric_rows(
    *, job: TrainingJob, after_id: int = 0, limit: int | None = None
) -> list[tuple[int, str, int, float]]:
    """``(id, name, step, value)`` rows of ``job`` with id above ``after_id``,
    in id order (the order they were written)."""
    qs = (
        TrainingMetric.objects.filter(job=job, pk__gt=after_id)
        .order_by("pk")
        .values_list("pk", "name", "step", "value")
    )
    return list(qs if limit is None else qs[:limit])


def training_job_charts(*, job: TrainingJob) -> dict[str, Any]:
    """The job page's charts from one read of its metric rows.

    ``groups`` are the named charts (hidden while they have no points, so a
    live update can reveal them), ``others`` one chart per remaining metric,
    ``last_id`` the highest row id included: the page asks for rows after it.
    """
    rows = training_job_metric_rows(job=job)
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for _, name, step, value in rows:
        points[name].append((step, value))
    for series_points in points.values():
        series_points.sort(key=lambda p: p[0])
    groups = []
    for slug, title, y_axis, splits in METRIC_GROUPS:
        group = charts.chart(
            id=slug,
            title=title,
            kind="line",
            x=_STEP,
            y=y_axis,
            series=[
                charts.series(label=split, key=key, points=points.get(key, []))
                for split, keys in splits.items()
                for key in keys
            ],
        )
        groups.append({**group, "hidden": not charts.chart_has_points(group)})
    others = [
        charts.chart(
            id=f"metric:{name}",
            title=name,
            kind="line",
            x=_STEP,
            y=charts.axis(name),
            series=[charts.series(label=name, points=points[name])],
        )
        for name in sorted(points)
        if name not in GROUPED_KEYS
    ]
    return {
        "groups": groups,
        "others": others,
        "last_id": max((r[0] for r in rows), default=0),
    }


def training_job_metrics_since(*, job: TrainingJob, after_id: int) -> dict[str, Any]:
    """What the job page's poll needs: rows newer than ``after_id`` (at most
    ``METRIC_FEED_LIMIT``; ``more`` says to ask again at once) and the job's
    progress. Reads the job first, so a finished status implies every row it
    wrote is visible to the second read."""
    rows = training_job_metric_rows(
        job=job, after_id=after_id, limit=METRIC_FEED_LIMIT + 1
    )
    more = len(rows) > METRIC_FEED_LIMIT
    rows = rows[:METRIC_FEED_LIMIT]
    return {
        # JSON has no NaN; such a row is skipped, but counted as seen.
        "rows": [list(r) for r in rows if math.isfinite(r[3])],
        "last_id": rows[-1][0] if rows else after_id,
        "more": more,
        "active": job.is_active,
        "status": job.status,
        "progress": {
            "step": job.progress_step,
            "total": job.progress_total,
            "percent": job.progress_percent,
        },
    }


# ---------------------------------------------------------------- job status in words

# The worker's heartbeat thread beats every HEARTBEAT_SECONDS; six missed
# beats are worth a warning long before the sweeper fails the job (at
# ARBITER_HEARTBEAT_TIMEOUT), and never after it.
HEARTBEAT_MISSED_BEATS = 6

_PHASE_WORDS = {
    TrainingJob.Phase.QUEUED: "Waiting for a GPU worker",
    TrainingJob.Phase.CONVERTING: "Converting the base model (first use only)",
    TrainingJob.Phase.LOADING: "Loading the base model",
    TrainingJob.Phase.EVALUATING: "Evaluating on the validation split",
    TrainingJob.Phase.SAVING: "Saving the adapter",
    TrainingJob.Phase.DONE: "Registering the adapter",
}


def heartbeat_warning_seconds() -> int:
    """How long a running job's worker may stay silent before its page warns:
    six missed heartbeats, capped at the sweeper's own timeout."""
    return min(
        settings.ARBITER_HEARTBEAT_TIMEOUT,
        round(HEARTBEAT_MISSED_BEATS * HEARTBEAT_SECONDS),
    )


def eta_words(seconds: int | None) -> str:
    """``"about 4 min left"`` (whole minutes, rounded up), seconds under a
    minute; empty when there is no estimate."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(seconds, 1)} s left"
    return f"about {math.ceil(seconds / 60)} min left"


def _steps(job: TrainingJob) -> str:
    if job.progress_total:
        return f"step {job.progress_step} of {job.progress_total}"
    return f"step {job.progress_step}" if job.progress_step else "starting"


def training_job_phase_words(*, job: TrainingJob) -> str:
    """What the job is doing, or where it stopped, as a sentence start:
    "Loading the base model", "Training: step 12 of 28", "Failed while
    loading the base model", "Cancelled before it started"."""
    phase = job.phase
    if job.status == TrainingJob.Status.SUCCEEDED:
        return "Done"
    if job.status == TrainingJob.Status.CANCELLED:
        if phase == TrainingJob.Phase.QUEUED:
            return "Cancelled before it started"
        stopped = f"Cancelled while {TrainingJob.Phase(phase).label}"
        if phase == TrainingJob.Phase.TRAINING:
            return f"{stopped} ({_steps(job)})"
        return stopped
    if job.status == TrainingJob.Status.FAILED:
        if phase in (TrainingJob.Phase.QUEUED, TrainingJob.Phase.DONE):
            return "Failed"
        return f"Failed while {TrainingJob.Phase(phase).label}"
    if phase == TrainingJob.Phase.TRAINING:
        return f"Training: {_steps(job)}"
    if job.status == TrainingJob.Status.RUNNING and phase == TrainingJob.Phase.QUEUED:
        return "Starting on the GPU worker"
    return _PHASE_WORDS[TrainingJob.Phase(phase)]


def training_job_heartbeat_stale(
    *, job: TrainingJob, now: datetime | None = None
) -> bool:
    """Whether a running job's last heartbeat (else its start) is older than
    ``heartbeat_warning_seconds()``: its worker may be gone."""
    if job.status != TrainingJob.Status.RUNNING:
        return False
    last = job.heartbeat_at or job.started_at or job.updated_at
    now = now or timezone.now()
    return (now - last).total_seconds() > heartbeat_warning_seconds()


@dataclass(frozen=True)
class TrainingJobSummary:
    job: TrainingJob
    phase: str
    eta: str
    heartbeat_stale: bool
    can_cancel: bool
    worker: str
    # The run's final metrics as (words, value): the named charts' first.
    final_metrics: list[tuple[str, float]]


def training_job_summary(
    *, job: TrainingJob, now: datetime | None = None
) -> TrainingJobSummary:
    """The job's phase in words, its ETA (only while training), whether its
    heartbeat is stale and whether it can still be cancelled."""
    training = (
        job.status == TrainingJob.Status.RUNNING
        and job.phase == TrainingJob.Phase.TRAINING
    )
    return TrainingJobSummary(
        job=job,
        phase=training_job_phase_words(job=job),
        eta=eta_words(job.eta_seconds) if training else "",
        heartbeat_stale=training_job_heartbeat_stale(job=job, now=now),
        can_cancel=job.is_active and not job.cancel_requested,
        worker=worker_words(job.worker or ""),
        final_metrics=[
            (metric_words(name), value)
            for name, value in sorted(
                (job.final_metrics or {}).items(), key=lambda kv: _metric_order(kv[0])
            )
        ],
    )
