"""Held-out test metrics of an adapter on the labels of the campaign's
**test** split: a reward adapter's pairwise accuracy (chosen scored above
rejected) and margin; a policy adapter's DPO implicit-reward accuracy and
margin (log-probability ratio against the base, chosen above rejected).

Snapshots write only the train and validation splits (``training``), so a
runner never sees a test-split label: training's own ``eval_*`` metrics come
from the validation split, which early stopping also selects on. These
figures come from labels neither touched. They are stored on the adapter's
``metrics`` beside the validation ones (``test_accuracy``, ``test_margin``,
``test_pairs``, ``test_last_preference``) and recomputed when test-split
labels arrived since. Runs on a gpu worker (the drift evaluation calls it for
the campaign's reward model; registration calls ``adapter_test_metrics_*``
for both roles)."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Max

from labeling.models import Preference, Prompt
from labeling.selectors import preference_export_rows
from models_hub.models import Adapter
from models_hub.services.registry import adapter_path, base_model_local_path
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)

# A policy's figures read four forward passes per label: the newest labels
# up to this many (``test_pairs`` says how many were read).
POLICY_TEST_PAIRS = 512


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
    rows = _test_rows(adapter, last=last)
    if not rows:
        return {}
    if scorer is None:
        from ml.reward import RewardScorer

        scorer = RewardScorer.load(
            base_model_local_path(adapter.base_model), adapter_path(adapter)
        )
    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    return _store(adapter, chosen, rejected, last=last)


def adapter_test_metrics_due(*, adapter: Adapter) -> bool:
    """Whether test-split labels arrived since the adapter's test metrics
    (reward and policy adapters of a campaign)."""
    if adapter.campaign_id is None or adapter.role not in (
        Adapter.Role.REWARD,
        Adapter.Role.POLICY,
    ):
        return False
    last = _last_test_preference(adapter)
    return last > 0 and adapter.metrics.get("test_last_preference") != last


def adapter_test_metrics_update(*, adapter: Adapter) -> dict[str, Any]:
    """``reward_test_metrics_update`` or ``policy_test_metrics_update`` by
    the adapter's role."""
    if adapter.role == Adapter.Role.REWARD:
        return reward_test_metrics_update(adapter=adapter)
    return policy_test_metrics_update(adapter=adapter)


def policy_test_metrics_update(*, adapter: Adapter) -> dict[str, Any]:
    """DPO's implicit reward on the test split's labels (ties left out, the
    newest ``POLICY_TEST_PAIRS``): for each label the log-probability ratio
    of the policy to its base on the chosen answer minus that on the
    rejected one. ``test_accuracy`` is the share above 0 (DPO's
    ``rewards/accuracies``, on labels no run saw), ``test_margin`` the mean
    in nats (DPO's ``rewards/margins`` without its beta). Stored on the
    adapter's ``metrics`` like the reward figures; {} without labels."""
    assert adapter.campaign is not None
    last = _last_test_preference(adapter)
    rows = _test_rows(adapter, last=last)[-POLICY_TEST_PAIRS:]
    if not rows:
        return {}
    from ml.generation import get_generator

    generator = get_generator(base_model_local_path(adapter.base_model))
    spec = (str(VersionKey.adapter(adapter.pk)), str(adapter_path(adapter)))
    prompts = [r["prompt"] for r in rows]

    def log_ratio(answers: list[Any]) -> list[float]:
        texts = [_text(a) for a in answers]
        policy = generator.negative_log_likelihood(
            prompts, texts, adapter=spec, per_token=False
        )
        base = generator.negative_log_likelihood(prompts, texts, per_token=False)
        return [b - p for p, b in zip(policy, base, strict=True)]

    chosen = log_ratio([r["chosen"] for r in rows])
    rejected = log_ratio([r["rejected"] for r in rows])
    return _store(adapter, chosen, rejected, last=last)


def _test_rows(adapter: Adapter, *, last: int) -> list[dict[str, Any]]:
    """The campaign's test-split labels up to ``last``, ties left out."""
    assert adapter.campaign is not None
    return [
        r
        for r in preference_export_rows(
            campaign=adapter.campaign, tie_policy="skip", splits=[Prompt.Split.TEST]
        )
        if r["preference_id"] <= last
    ]


def _store(
    adapter: Adapter, chosen: list[float], rejected: list[float], *, last: int
) -> dict[str, Any]:
    """Accuracy (chosen above rejected) and mean margin of the scores, stored
    on the adapter's ``metrics`` beside its validation figures."""
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
        "models_hub.test_metrics adapter=%s role=%s accuracy=%.3f pairs=%s",
        adapter.pk,
        adapter.role,
        figures["test_accuracy"],
        len(margins),
    )
    return figures


def _text(answer: Any) -> str:
    """A row's answer as text: conversational rows hold ``[{role, content}]``."""
    if isinstance(answer, list):
        return "".join(str(m.get("content", "")) for m in answer)
    return str(answer)
