"""Generation rounds of a rank campaign (issue 14 §1): the real gpu worker
writes ranked comparisons instead of pairs, and a ranking of a candidate
round's held-out answers counts at the promotion gate."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction

from labeling.models import Campaign, Comparison, Completion
from labeling.services.ranking import ranking_lease_next, ranking_record
from models_hub.models import Adapter, BaseModelVersion, GenerationJob
from models_hub.selectors import adapter_gate_evidence
from models_hub.services.generation import (
    comparison_ranked_queue,
    generation_job_launch,
    ranked_items_interleave,
)
from models_hub.services.registry import adapter_register, generation_settings_for
from tests.labeling.factories import CampaignFactory, CompletionFactory, PromptFactory


def _wait(job: GenerationJob, workers: dict[str, Any], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            return
        time.sleep(0.5)
    log = workers["logs"]["gpu"].read_text()[-4000:]
    pytest.fail(f"job #{job.pk} still {job.status} ({job.phase}):\n{log}")


def _tiny_settings(campaign: Campaign, **fields: Any) -> None:
    row = generation_settings_for(campaign)
    row.max_new_tokens, row.temperature, row.top_p = 8, 1.0, 1.0
    # The tiny random model writes noise: only the mechanics are under test.
    row.max_extra_degenerate, row.max_length_ratio, row.max_nll_increase = 1, 1e3, 1e3
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()


def _items(comparison: Comparison) -> list[Completion]:
    return [
        item.completion
        for item in comparison.items.select_related("completion").order_by("position")
    ]


@pytest.mark.django_db
def test_a_rankings_pairs_between_two_versions_count_once_as_their_mean(
    annotator: Any,
) -> None:
    """Two answers of a candidate and two of the base in one ranking imply
    four candidate-vs-base pairs; the outcomes count that ranking once, with
    the mean of its pairs (3 of 4 won: 0.75), and the gate sees one label."""
    from models_hub.selectors import version_outcomes

    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    prompt = PromptFactory(campaign=campaign, split="test")
    base = BaseModelVersion.objects.create(name="b", source="/models/b")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )
    answers = [
        CompletionFactory(
            prompt=prompt,
            origin="model",
            adapter=adapter if side == "c" else None,
            base_model=base,
            text=f"{side}{i}",
        )
        for side, i in (("c", 0), ("c", 1), ("b", 0), ("b", 1))
    ]
    with transaction.atomic():
        assert comparison_ranked_queue(
            campaign=campaign, prompt=prompt, completions=answers, priority=0
        )
    leased = ranking_lease_next(campaign=campaign, annotator=annotator)
    # c0 > b0 > c1 > b1: the candidate wins c0-b0, c0-b1, c1-b1, loses c1-b0.
    place = {answers[0].pk: 1, answers[2].pk: 2, answers[1].pk: 3, answers[3].pk: 4}
    ranking_record(
        lease=leased.lease,
        user=annotator,
        ranks=[place[pk] for pk in leased.lease.order],
    )

    outcomes = version_outcomes(campaign=campaign)
    assert len(outcomes) == 1
    [(a, b, score)] = outcomes
    mine = f"adapter:{adapter.pk}"
    assert (score if a == mine else 1 - score) == pytest.approx(0.75)
    evidence = adapter_gate_evidence(adapter=adapter)
    assert evidence["n"] == 1 and evidence["rate"] == pytest.approx(0.75)


@pytest.mark.django_db
def test_a_ranked_comparison_is_queued_once_per_item_set() -> None:
    """Distinct texts only, at most 9, at least 3; the same completions in
    another order are the existing ranking, a different set is a new one."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    prompt = PromptFactory(campaign=campaign)
    answers = [CompletionFactory(prompt=prompt, text=f"answer {i}") for i in range(11)]
    twin = CompletionFactory(prompt=prompt, text="answer 0", source_label="other")
    assert ranked_items_interleave([answers[:3], answers[3:4]]) == [
        answers[0],
        answers[3],
        answers[1],
        answers[2],
    ]
    with transaction.atomic():
        assert (
            comparison_ranked_queue(
                campaign=campaign,
                prompt=prompt,
                completions=[answers[0], twin, answers[1]],
                priority=0,
            )
            is None
        )
        first = comparison_ranked_queue(
            campaign=campaign, prompt=prompt, completions=answers, priority=3
        )
        assert first is not None and first.is_ranked and first.priority == 3
        assert _items(first) == answers[:9]
        assert first.implied_pairs.count() == 9 * 8 // 2
        assert (
            comparison_ranked_queue(
                campaign=campaign,
                prompt=prompt,
                completions=list(reversed(answers[:9])),
                priority=3,
            )
            is None
        )
        other = comparison_ranked_queue(
            campaign=campaign, prompt=prompt, completions=answers[2:5], priority=0
        )
        assert other is not None and other.pk != first.pk
    assert Comparison.objects.filter(is_ranked=True).count() == 2


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_rank_campaigns_bootstrap_ranks_its_distinct_samples(
    celery_workers: Any, tiny_base: BaseModelVersion
) -> None:
    """With the default two samples per prompt, a rank campaign's bootstrap
    writes three (the least a ranking holds), each with its own seed, and
    queues one ranking of a prompt's distinct samples instead of pairs."""
    pytest.importorskip("torch")
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    prompts = [
        PromptFactory(campaign=campaign, text=f"tell me about the cat number {i} .")
        for i in range(2)
    ]
    _tiny_settings(campaign, samples_per_prompt=2, bootstrap_prompts=10)

    job = generation_job_launch(campaign=campaign, kind=GenerationJob.Kind.BOOTSTRAP)
    _wait(job, celery_workers)

    assert job.status == "succeeded", job.error
    assert job.prompts_done == job.prompts_total == 2 * 3
    queued = Comparison.objects.filter(campaign=campaign, parent__isnull=True)
    assert not queued.filter(is_ranked=False).exists()
    assert queued.count() == job.comparisons_created >= 1
    for comparison in queued:
        items = _items(comparison)
        assert len(items) == 3 and len({c.content_hash for c in items}) == 3
        assert {c.generation["sample"] for c in items} == {0, 1, 2}
        assert len({c.generation["seed"] for c in items}) == 3
        assert all(c.generation["bootstrap_job"] == job.pk for c in items)
        assert comparison.implied_pairs.count() == 3
    for prompt in prompts:
        if not queued.filter(prompt=prompt).exists():
            # Only a prompt whose samples repeated a text goes without.
            written = Completion.objects.filter(generation__bootstrap_job=job.pk)
            assert written.filter(prompt=prompt).count() < 3


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_rank_campaigns_candidate_round_ranks_both_versions_for_the_gate(
    celery_workers: Any,
    tiny_base: BaseModelVersion,
    tiny_model_dir: Path,
    annotator: Any,
) -> None:
    """A candidate round in a rank campaign queues one ranking per training
    prompt mixing the candidate's and the base's answers (taken alternately),
    and for the held-out prompt as many rankings of two answers a side as
    the gate needs (it counts a ranking once, however many pairs it implies),
    a priority step ahead; ranking the candidate's answers first makes each
    of those rankings one win at the gate."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    held = PromptFactory(campaign=campaign, text="tell me about the held cat .")
    held.split = "test"
    held.save(update_fields=["split"])
    for i in range(2):
        PromptFactory(
            campaign=campaign, text=f"tell me about the dog {i} .", split="train"
        )
    _tiny_settings(campaign, prompts_per_round=3, gate_min_comparisons=3, priority=10)
    storage = f"adapters/test-rank-round-{uuid.uuid4().hex}"
    folder = Path(settings.STORAGE_ROOT) / storage
    torch.manual_seed(0)
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        # Random and strongly scaled, so its answers differ from the base's.
        LoraConfig(
            r=2,
            lora_alpha=256,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
        ),
    ).save_pretrained(folder)
    try:
        adapter = adapter_register(
            campaign=campaign,
            base_model=tiny_base,
            method="dpo",
            peft_type="lora",
            storage_path=storage,
            metrics={},
        )
        job = generation_job_launch(
            campaign=campaign, kind=GenerationJob.Kind.CANDIDATE, adapter=adapter
        )
        _wait(job, celery_workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    assert job.status == "succeeded", job.error
    # 3 prompts by both sides; then 5 more samples of the held-out prompt (3
    # rankings of 2 a side) and 1 more of each training prompt, per side.
    assert job.prompts_done == job.prompts_total == 3 * 2 + 5 * 2 + 2 * 2
    queued = Comparison.objects.filter(campaign=campaign, parent__isnull=True)
    assert not queued.filter(is_ranked=False).exists()
    assert queued.count() == job.comparisons_created
    held_rankings = list(queued.filter(prompt=held))
    assert 2 <= len(held_rankings) <= 3
    assert {c.priority for c in held_rankings} == {11}
    assert {c.priority for c in queued.exclude(prompt=held)} <= {10}
    seen: set[int] = set()
    for comparison in queued:
        items = _items(comparison)
        assert 3 <= len(items) <= 4
        assert len({c.content_hash for c in items}) == len(items)
        sides = [c.adapter_id for c in items]
        assert {adapter.pk, None} <= set(sides)
        assert sides[:2] == [adapter.pk, None]  # taken alternately
        if comparison.prompt_id == held.pk:
            assert not seen & {c.pk for c in items}  # each answer in one ranking
            seen |= {c.pk for c in items}

    for _ in held_rankings:
        leased = ranking_lease_next(campaign=campaign, annotator=annotator)
        assert leased.lease.comparison.prompt_id == held.pk
        by_pk = {c.pk: c for c in _items(leased.lease.comparison)}
        mine = [by_pk[pk].adapter_id == adapter.pk for pk in leased.lease.order]
        # The candidate's answers first (each its own place), then the base's.
        places = sorted(range(len(mine)), key=lambda i: (not mine[i], i))
        ranks = [0] * len(mine)
        for place, index in enumerate(places, start=1):
            ranks[index] = place
        ranking_record(lease=leased.lease, user=annotator, ranks=ranks)

    evidence = adapter_gate_evidence(adapter=Adapter.objects.get(pk=adapter.pk))
    assert evidence["opponent"] == f"base:{tiny_base.pk}"
    # One win per ranking, however many candidate-over-base pairs it implies.
    assert evidence["n"] == evidence["wins"] == len(held_rankings)
    assert evidence["losses"] == evidence["ties"] == 0
