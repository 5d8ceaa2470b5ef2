"""Generation rounds as jobs: launching and cancelling, the bootstrap beat,
the stale-job sweeper, and bootstrap and candidate rounds run by the real gpu
worker on a tiny random Llama."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from core.exceptions import Conflict
from labeling.models import Campaign, Comparison, Completion
from models_hub.models import Adapter, AdapterEvent, BaseModelVersion, GenerationJob
from models_hub.services.generation import (
    bootstrap_tick,
    generation_job_cancel,
    generation_job_launch,
    generation_job_sweep_stale,
    open_pair_count,
    prompts_without_open_pairs,
)
from models_hub.services.registry import adapter_register, generation_settings_for
from tests.labeling.factories import CampaignFactory, ComparisonFactory, PromptFactory

BOOTSTRAP = GenerationJob.Kind.BOOTSTRAP


@pytest.fixture
def tiny_base(tiny_model_dir: Path, db: None) -> BaseModelVersion:
    """The tiny random Llama as the default base (generation takes seconds)."""
    BaseModelVersion.objects.filter(is_default=True).update(is_default=False)
    return BaseModelVersion.objects.create(
        name="tiny-llama", source=str(tiny_model_dir), is_default=True
    )


def _prompts_only(n: int = 3, **fields: Any) -> Campaign:
    """A new campaign holding ``n`` imported prompts and no pairs."""
    campaign = CampaignFactory(**fields)
    for i in range(n):
        PromptFactory(campaign=campaign, text=f"tell me about the cat number {i} .")
    return campaign


def _wait(job: GenerationJob, workers: dict[str, Any], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            return
        time.sleep(0.5)
    log = workers["logs"]["gpu"].read_text()[-4000:]
    pytest.fail(f"job #{job.pk} still {job.status} ({job.phase}):\n{log}")


# ---------------------------------------------------------------- launching


@pytest.mark.django_db
def test_one_active_job_per_campaign_kind_and_version_and_cancel_rules(
    tiny_base: BaseModelVersion,
) -> None:
    """A launch writes a queued record; a second launch of the same kind for
    the same version is a Conflict naming the active job, while another
    version may start. Cancelling a queued job stops it at once (and frees
    the slot), a running one is asked to stop, a finished one is a Conflict."""
    campaign = _prompts_only()
    job = generation_job_launch(campaign=campaign, kind=BOOTSTRAP)
    assert job.status == GenerationJob.Status.QUEUED and job.adapter is None

    with pytest.raises(Conflict, match=f"already queued \\(job #{job.pk}\\)"):
        generation_job_launch(campaign=campaign, kind=BOOTSTRAP)
    adapter = adapter_register(
        campaign=campaign,
        base_model=tiny_base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )
    other = generation_job_launch(
        campaign=campaign, kind=GenerationJob.Kind.CANDIDATE, adapter=adapter
    )
    assert GenerationJob.objects.filter(status="queued").count() == 2

    cancelled = generation_job_cancel(job=job)
    assert cancelled.status == GenerationJob.Status.CANCELLED
    assert cancelled.finished_at is not None
    with pytest.raises(Conflict, match="already cancelled"):
        generation_job_cancel(job=job)
    again = generation_job_launch(campaign=campaign, kind=BOOTSTRAP)
    assert again.pk != job.pk

    GenerationJob.objects.filter(pk=again.pk).update(status="running")
    running = generation_job_cancel(job=again)
    assert running.status == "running" and running.cancel_requested
    with pytest.raises(Conflict, match=f"already running \\(job #{again.pk}\\)"):
        generation_job_launch(campaign=campaign, kind=BOOTSTRAP)

    GenerationJob.objects.filter(pk=other.pk).update(status="succeeded")
    with pytest.raises(Conflict, match="already succeeded"):
        generation_job_cancel(job=other)


# ---------------------------------------------------------------- the beat


@pytest.mark.django_db
def test_bootstrap_tick_launches_one_round_for_a_campaign_with_prompts_only(
    db: None,
) -> None:
    """A campaign that was only given prompts (its generation settings never
    opened) gets exactly one bootstrap round; while it is active, later ticks
    launch none."""
    campaign = _prompts_only()
    assert open_pair_count(campaign=campaign) == 0
    assert prompts_without_open_pairs(campaign=campaign).count() == 3

    assert bootstrap_tick() == 1
    job = GenerationJob.objects.get(campaign=campaign)
    assert job.kind == BOOTSTRAP and job.status == "queued" and job.adapter is None
    assert bootstrap_tick() == 0
    GenerationJob.objects.filter(pk=job.pk).update(status="running")
    assert bootstrap_tick() == 0
    assert GenerationJob.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db
def test_bootstrap_tick_launches_nothing_when_not_wanted(db: None) -> None:
    """No round when the open pairs reach the low-water mark, when the
    campaign is paused, or when its bootstrap is turned off."""
    full = _prompts_only()
    for _ in range(3):
        ComparisonFactory(campaign=full)
    row = generation_settings_for(full)
    row.low_water_mark = 3
    row.save()
    _prompts_only(status=Campaign.Status.PAUSED)
    off = _prompts_only()
    row = generation_settings_for(off)
    row.bootstrap_enabled = False
    row.save()

    assert bootstrap_tick() == 0
    assert not GenerationJob.objects.exists()

    # One pair fewer than the mark: the first campaign needs a round.
    Comparison.objects.filter(campaign=full).first().delete()
    assert bootstrap_tick() == 1
    assert GenerationJob.objects.get().campaign_id == full.pk


# ---------------------------------------------------------------- the sweeper


@pytest.mark.django_db
def test_sweeper_fails_a_job_whose_worker_died_and_leaves_live_ones(
    db: None,
) -> None:
    """A RUNNING job whose heartbeat is older than the timeout is failed with
    a message naming its worker; a running job with a fresh heartbeat and a
    queued one (no heartbeat yet) are left alone."""
    campaign = _prompts_only()
    now = timezone.now()
    dead = GenerationJob.objects.create(
        campaign=campaign,
        kind=BOOTSTRAP,
        status="running",
        worker="gpu-7:4242",
        heartbeat_at=now - timedelta(minutes=10),
    )
    other = CampaignFactory()
    alive = GenerationJob.objects.create(
        campaign=other, kind=BOOTSTRAP, status="running", heartbeat_at=now
    )
    queued = GenerationJob.objects.create(
        campaign=campaign, kind=GenerationJob.Kind.REVIEW, status="queued"
    )

    assert generation_job_sweep_stale(timeout_seconds=60) == 1

    dead.refresh_from_db()
    assert dead.status == "failed" and dead.finished_at is not None
    assert "gpu-7:4242" in dead.error and "stopped sending heartbeats" in dead.error
    alive.refresh_from_db()
    queued.refresh_from_db()
    assert alive.status == "running" and queued.status == "queued"
    assert generation_job_sweep_stale(timeout_seconds=60) == 0


# ---------------------------------------------------------------- real worker


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_bootstrap_round_pairs_distinct_samples_and_never_repeats_a_prompt(
    celery_workers: Any, tiny_base: BaseModelVersion
) -> None:
    """From prompts alone the gpu worker writes two seeded samples per prompt
    from the base and pairs them (never two identical texts); a second round
    answers only prompts that have no open pair, so no pair is duplicated."""
    pytest.importorskip("torch")
    campaign = _prompts_only(4)
    row = generation_settings_for(campaign)
    row.max_new_tokens = 8
    row.temperature = 1.0
    row.top_p = 1.0
    row.bootstrap_prompts = 10
    row.save()

    assert bootstrap_tick() == 1
    first = GenerationJob.objects.get(campaign=campaign)
    _wait(first, celery_workers)

    assert first.status == "succeeded", first.error
    assert first.prompts_done == first.prompts_total == 8
    assert first.new_tokens > 0 and first.tokens_per_second > 0
    pairs = list(Comparison.objects.filter(campaign=campaign))
    assert len(pairs) == first.comparisons_created > 0
    for pair in pairs:
        a, b = pair.completion_a, pair.completion_b
        assert a.prompt_id == b.prompt_id == pair.prompt_id
        assert a.text != b.text and a.content_hash != b.content_hash
        for c in (a, b):
            assert c.origin == Completion.Origin.MODEL
            assert c.adapter_id is None and c.base_model_id == tiny_base.pk
            assert c.generation["bootstrap_job"] == first.pk
        assert {a.generation["sample"], b.generation["sample"]} == {0, 1}
        assert a.generation["seed"] != b.generation["seed"]
    paired = {p.prompt_id for p in pairs}

    # New prompts arrive; the next round answers them (and any prompt whose
    # two samples were the same text), never a prompt that has an open pair.
    for i in range(2):
        PromptFactory(campaign=campaign, text=f"tell me about the river number {i} .")
    waiting = set(
        prompts_without_open_pairs(campaign=campaign).values_list("pk", flat=True)
    )
    assert not waiting & paired and len(waiting) >= 2
    row.low_water_mark = 100
    row.save()
    assert bootstrap_tick() == 1
    second = GenerationJob.objects.exclude(pk=first.pk).get(campaign=campaign)
    _wait(second, celery_workers)

    assert second.status == "succeeded", second.error
    assert second.prompts_total == 2 * len(waiting)
    assert not Completion.objects.filter(
        generation__bootstrap_job=second.pk, prompt_id__in=paired
    ).exists()
    all_pairs = Comparison.objects.filter(campaign=campaign)
    assert all_pairs.count() == len(pairs) + second.comparisons_created
    per_prompt = {}
    for pair in all_pairs:
        per_prompt[pair.prompt_id] = per_prompt.get(pair.prompt_id, 0) + 1
    assert set(per_prompt.values()) == {1}


def _looping_adapter(base_dir: Path, out: Path, word: str = " cat") -> Path:
    """A LoRA adapter (with saved embedding and output layers) that makes the
    tiny model say ``word`` forever: every token embeds to the same vector,
    so the last hidden state is constant, and the output layer maps that
    state to ``word``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = AutoTokenizer.from_pretrained(base_dir)(word, add_special_tokens=False)[
        "input_ids"
    ][-1]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(
            r=1, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"]
        ),
    )
    embed = model.base_model.model.model.embed_tokens.modules_to_save["default"]
    head = model.base_model.model.lm_head.modules_to_save["default"]
    with torch.no_grad():
        embed.weight[:] = embed.weight[token].clone()
        hidden = model(
            input_ids=torch.tensor([[1, 2, 3]]), output_hidden_states=True
        ).hidden_states[-1][0, -1]
        head.weight[token] = 50 * hidden / hidden.dot(hidden)
    model.save_pretrained(out)
    return out


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_looping_candidate_is_refused_by_its_guardrails_and_retired(
    celery_workers: Any, tiny_base: BaseModelVersion, tiny_model_dir: Path
) -> None:
    """A candidate whose every answer is one word repeated passes no
    guardrail: its round succeeds with ``passed`` False and the violation
    recorded, queues no pair, and the adapter is retired with a "refused"
    event giving the reason."""
    pytest.importorskip("torch")
    campaign = _prompts_only(4)
    row = generation_settings_for(campaign)
    row.max_new_tokens = 16
    row.prompts_per_round = 4
    row.save()
    storage = f"adapters/test-loop-{uuid.uuid4().hex}"
    folder = Path(settings.STORAGE_ROOT) / storage
    try:
        _looping_adapter(tiny_model_dir, folder)
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
    assert job.prompts_done == job.prompts_total == 8
    report = job.guardrails
    assert report["passed"] is False
    assert report["candidate"]["degenerate"] == 1.0
    assert report["opponent"]["degenerate"] < 0.5
    assert report["opponent_key"] == f"base:{tiny_base.pk}"
    loops = [v for v in report["violations"] if "empty or loops" in v]
    assert loops
    mine = Completion.objects.filter(adapter=adapter)
    assert mine.count() == 4
    assert all(set(c.text.split()) == {"cat"} for c in mine)
    assert job.comparisons_created == 0
    assert not Comparison.objects.filter(campaign=campaign).exists()
    adapter.refresh_from_db()
    assert adapter.status == Adapter.Status.RETIRED
    event = AdapterEvent.objects.get(adapter=adapter, action="refused")
    assert loops[0] in event.reason
    assert event.evidence["violations"] == report["violations"]


# ---------------------------------------------------------------- lost messages


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_whose_message_was_lost_is_sent_again_once_and_runs(
    celery_workers: Any, tiny_base: BaseModelVersion
) -> None:
    """While a QUEUED job's message waits in the gpu queue the sweep leaves
    it alone; once the message is gone (the queue purged, as a Redis that
    restarted without its data), the sweep sends it again, once, and the
    gpu worker runs the job."""
    pytest.importorskip("torch")
    from core.heartbeat import task_messages_pending
    from models_hub.services.generation import generation_job_redispatch_lost
    from tests.broker import gpu_queue_paused, queue_purge

    run = "models_hub.generation_job_run"
    campaign = _prompts_only(2)
    row = generation_settings_for(campaign)
    row.max_new_tokens = 8
    row.save()
    with gpu_queue_paused(celery_workers):
        job = generation_job_launch(campaign=campaign, kind=BOOTSTRAP)
        assert (job.pk,) in task_messages_pending(name=run)
        assert generation_job_redispatch_lost(older_than_seconds=0) == 0

        queue_purge("gpu")
        assert (job.pk,) not in task_messages_pending(name=run)
        # Younger than the grace period: its message may still be on the way.
        assert generation_job_redispatch_lost(older_than_seconds=3600) == 0
        assert generation_job_redispatch_lost(older_than_seconds=0) == 1
        assert (job.pk,) in task_messages_pending(name=run)
        assert generation_job_redispatch_lost(older_than_seconds=0) == 0
        job.refresh_from_db()
        assert job.status == "queued"

    _wait(job, celery_workers)
    assert job.status == "succeeded", job.error
    assert job.prompts_done == job.prompts_total > 0
    assert generation_job_redispatch_lost(older_than_seconds=0) == 0


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_candidate_round_answers_held_out_prompts_enough_times_for_the_gate(
    celery_workers: Any, tiny_base: BaseModelVersion, tiny_model_dir: Path
) -> None:
    """Only labels on held-out prompts count at the gate, and a round holds
    few of them: the candidate and its opponent answer each held-out prompt
    up to ceil(gate_min_comparisons / held-out prompts) times with their own
    seeds, those pairs go first in the queue, and the round's training-split
    prompts get one pair each (the data the next snapshot trains on)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    campaign = CampaignFactory()
    held_out = [
        PromptFactory(campaign=campaign, text=f"tell me about the held cat {i} .")
        for i in range(2)
    ]
    for prompt in held_out:
        prompt.split = "test"
        prompt.save(update_fields=["split"])
    for i in range(4):
        PromptFactory(
            campaign=campaign, text=f"tell me about the dog {i} .", split="train"
        )
    row = generation_settings_for(campaign)
    row.prompts_per_round, row.gate_min_comparisons = 4, 6
    row.max_new_tokens, row.temperature, row.top_p, row.priority = 8, 1.0, 1.0, 10
    # The tiny random model writes noise: only the mechanics are under test.
    row.max_extra_degenerate, row.max_length_ratio, row.max_nll_increase = 1, 1e3, 1e3
    row.save()
    storage = f"adapters/test-held-out-{uuid.uuid4().hex}"
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
    # 4 prompts by both sides, then 2 more samples of 2 held-out prompts each.
    assert job.prompts_done == job.prompts_total == 4 * 2 + 2 * 2 * 2
    pairs = list(Comparison.objects.filter(campaign=campaign))
    assert len(pairs) == job.comparisons_created
    held_ids = {p.pk for p in held_out}
    held_pairs = [p for p in pairs if p.prompt_id in held_ids]
    train_pairs = [p for p in pairs if p.prompt_id not in held_ids]
    assert {p.priority for p in held_pairs} == {11}
    assert {p.priority for p in train_pairs} == {10}
    assert len(train_pairs) == len({p.prompt_id for p in train_pairs}) >= 1
    # Up to 3 pairs per held-out prompt (a sample equal to the other side's
    # makes none), more pairs than held-out prompts, no completion used twice.
    per_prompt = {pk: [p for p in held_pairs if p.prompt_id == pk] for pk in held_ids}
    assert all(1 <= len(group) <= 3 for group in per_prompt.values())
    assert len(held_pairs) > len(held_ids)
    assert {
        c.generation.get("held_out_sample", 0)
        for p in held_pairs
        for c in (p.completion_a, p.completion_b)
    } >= {0, 1}
    used = [c for p in held_pairs for c in (p.completion_a_id, p.completion_b_id)]
    assert len(used) == len(set(used))
    for pair in held_pairs:
        assert pair.completion_a.adapter_id == adapter.pk
        assert pair.completion_b.adapter_id is None


@pytest.mark.django_db
def test_rounds_and_drift_never_sample_the_turns_of_live_conversations() -> None:
    """A live conversation's turns are chat prompts of the campaign written
    mid-conversation: bootstrap, candidate rounds and the drift evaluation
    sample the imported prompts only."""
    from models_hub.services.drift import drift_heldout_prompts
    from models_hub.services.generation import _round_prompts

    campaign = CampaignFactory()
    imported = [
        PromptFactory(campaign=campaign, split=split, text=f"imported {split}")
        for split in ("train", "test")
    ]
    for split in ("train", "test"):
        PromptFactory(
            campaign=campaign,
            split=split,
            text=f"turn {split}",
            metadata={"source": "conversation"},
        )
    ids = {p.pk for p in imported}
    assert {p.pk for p in prompts_without_open_pairs(campaign=campaign)} == ids
    assert {p.pk for p in _round_prompts(campaign, count=10, seed=0)} == ids
    assert [p.pk for p in drift_heldout_prompts(campaign=campaign, count=10)] == [
        imported[1].pk
    ]
