from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import QuerySet

from core.exceptions import NotFound
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


CHART_KEYS = (
    "loss",
    "eval_loss",
    "eval_accuracy",
    "rewards/accuracies",
    "eval_rewards/accuracies",
    "rewards/margins",
    "eval_rewards/margins",
    "accuracy",
    "margin",
    "reward",
    "kl",
    "objective/kl",
    "objective/scores",
    "eval_reward",
)


def training_job_charts(
    *, job: TrainingJob, width: int = 420, height: int = 140
) -> list[dict[str, Any]]:
    """Each metric as an SVG polyline, scaled server-side (no JS chart lib)."""
    charts = []
    for name, points in sorted(training_job_metric_series(job=job).items()):
        if (
            len(points) < 1
            or name in ("epoch", "learning_rate", "grad_norm")
            or name.endswith("runtime")
            or "per_second" in name
        ):
            continue
        steps = [s for s, _ in points]
        values = [v for _, v in points]
        lo, hi = min(values), max(values)
        span_y = (hi - lo) or 1.0
        s0, s1 = min(steps), max(steps)
        span_x = (s1 - s0) or 1
        coords = " ".join(
            f"{(s - s0) / span_x * (width - 20) + 10:.1f},{height - 10 - (v - lo) / span_y * (height - 20):.1f}"
            for s, v in points
        )
        charts.append(
            {
                "name": name,
                "points": coords,
                "last": values[-1],
                "min": lo,
                "max": hi,
                "count": len(points),
                "width": width,
                "height": height,
            }
        )
    charts.sort(key=lambda c: (c["name"] not in CHART_KEYS, c["name"]))
    return charts
