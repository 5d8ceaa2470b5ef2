"""Held-out test metrics of a reward adapter: its pairwise accuracy on the
labels of the campaign's **test** split.

Snapshots write only the train and validation splits (``training``), so a
runner never sees a test-split label: training's own ``eval_*`` metrics come
from the validation split, which early stopping also selects on. These
figures come from labels neither touched. They are stored on the adapter's
``metrics`` beside the validation ones (``test_accuracy``, ``test_margin``,
``test_pairs``, ``test_last_preference``) and recomputed when test-split
labels arrived since. Runs on a gpu worker (the drift evaluation calls it for
the campaign's reward model)."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Max

from labeling.models import Preference, Prompt
from labeling.selectors import preference_export_rows
from models_hub.models import Adapter
from models_hub.services.registry import adapter_path, base_model_local_path

logger = logging.getLogger(__name__)


def _last_test_preference(adapter: Adapter) -> int:
    return (
        Preference.objects.filter(
            comparison__campaign=adapter.campaign_id,
            comparison__prompt__split=Prompt.Split.TEST,
        ).aggregate(m=Max("id"))["m"]
        or 0
    )


def reward_test_metrics_due(*, adapter: Adapter) -> bool:
    """Whether test-split labels arrived since the adapter's test metrics."""
    if adapter.role != Adapter.Role.REWARD or adapter.campaign_id is None:
        return False
    last = _last_test_preference(adapter)
    return last > 0 and adapter.metrics.get("test_last_preference") != last


def reward_test_metrics_update(
    *, adapter: Adapter, scorer: Any | None = None
) -> dict[str, Any]:
    """Score every test-split label (ties left out) with the reward adapter
    and store accuracy (chosen above rejected) and mean margin on it.
    ``scorer`` is an ``ml.reward.RewardScorer`` of this adapter when the
    caller has one loaded. Returns the stored figures ({} without labels)."""
    assert adapter.campaign is not None
    last = _last_test_preference(adapter)
    rows = [
        r
        for r in preference_export_rows(
            campaign=adapter.campaign, tie_policy="skip", splits=[Prompt.Split.TEST]
        )
        if r["preference_id"] <= last
    ]
    if not rows:
        return {}
    if scorer is None:
        from ml.reward import RewardScorer

        scorer = RewardScorer.load(
            base_model_local_path(adapter.base_model), adapter_path(adapter)
        )
    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    figures = {
        "test_accuracy": sum(m > 0 for m in margins) / len(margins),
        "test_margin": sum(margins) / len(margins),
        "test_pairs": len(margins),
        "test_last_preference": last,
    }
    fresh = Adapter.objects.get(pk=adapter.pk)
    fresh.metrics = {**fresh.metrics, **figures}
    fresh.save(update_fields=["metrics", "updated_at"])
    adapter.metrics = fresh.metrics
    logger.info(
        "models_hub.test_metrics.reward adapter=%s accuracy=%.3f pairs=%s",
        adapter.pk,
        figures["test_accuracy"],
        len(margins),
    )
    return figures
