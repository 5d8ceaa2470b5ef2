"""A campaign's loop read as rounds (``training.loop.campaign_loop_get``):
real rows for snapshots, pipelines, jobs, adapters, generation rounds,
events and labels; no training or generation runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.exceptions import NotFound
from labeling.models import Campaign, Comparison, Completion, Preference
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    GenerationJob,
    GenerationSettings,
)
from models_hub.selectors import adapter_gate_evidence
from models_hub.services.promotion import promotion_tick
from models_hub.services.registry import (
    adapter_register,
    adapter_retire,
    generation_settings_for,
)
from tests.labeling.factories import CampaignFactory, PromptFactory
from training.loop import campaign_loop_get
from training.models import (
    DatasetSnapshot,
    TrainingJob,
    TrainingPipeline,
    TrainingPolicy,
)

PASSED = {
    "passed": True,
    "violations": [],
    "candidate": {"n": 8, "degenerate": 0.0, "length_mean": 40.0},
    "opponent": {"n": 8, "degenerate": 0.0, "length_mean": 38.0},
}


def labels(
    campaign: Campaign,
    first: Adapter,
    second: Adapter | BaseModelVersion,
    *,
    wins: int,
    losses: int,
    annotator: Any,
) -> None:
    """``wins + losses`` labeled pairs of ``first`` against ``second`` (an
    adapter, or a base model alone); ``first`` is preferred ``wins`` times."""
    for i in range(wins + losses):
        prompt = PromptFactory(campaign=campaign, split="test")
        a = Completion.objects.create(
            prompt=prompt,
            text=f"first {i}",
            content_hash=f"first-{first.pk}-{prompt.pk}",
            origin="model",
            adapter=first,
            base_model=first.base_model,
            source_label="first",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"second {i}",
            content_hash=f"second-{prompt.pk}",
            origin="model",
            adapter=second if isinstance(second, Adapter) else None,
            base_model=second.base_model if isinstance(second, Adapter) else second,
            source_label="second",
        )
        comparison = Comparison.objects.create(
            campaign=campaign,
            prompt=prompt,
            completion_a=a,
            completion_b=b,
            status=Comparison.Status.COMPLETE,
        )
        Preference.objects.create(
            comparison=comparison,
            annotator=annotator,
            a_on_left=True,
            choice="a" if i < wins else "b",
        )


def snapshot(campaign: Campaign) -> DatasetSnapshot:
    """A snapshot of every label so far (its files are not needed here)."""
    last = (
        Preference.objects.filter(comparison__campaign=campaign)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    ) or 0
    return DatasetSnapshot.objects.create(
        campaign=campaign,
        last_preference_id=last,
        counts={"preference": {"train": 9, "val": 2}},
        content_hash="0" * 64,
        storage_path=f"snapshots/{campaign.pk}-{last}",
    )


def trained_round(
    campaign: Campaign,
    base: BaseModelVersion,
    *,
    wall_seconds: int = 90,
    tokens_per_second: float | None = 120.5,
    guardrails: dict[str, Any] | None = None,
    generation_status: str = GenerationJob.Status.SUCCEEDED,
) -> Adapter:
    """A finished DPO pipeline on a snapshot of the labels so far, its
    adapter, and (unless ``generation_status`` is empty) its candidate
    generation job."""
    snap = snapshot(campaign)
    pipeline = TrainingPipeline.objects.create(
        campaign=campaign,
        kind="dpo",
        snapshot=snap,
        status=TrainingPipeline.Status.SUCCEEDED,
        triggered_by="scheduler",
    )
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )
    finished = timezone.now()
    TrainingJob.objects.create(
        campaign=campaign,
        method="dpo",
        base_model=base,
        snapshot=snap,
        pipeline=pipeline,
        status=TrainingJob.Status.SUCCEEDED,
        progress_step=28,
        progress_total=28,
        started_at=finished - timedelta(seconds=wall_seconds),
        finished_at=finished,
        adapter=adapter,
    )
    if generation_status:
        GenerationJob.objects.create(
            campaign=campaign,
            kind=GenerationJob.Kind.CANDIDATE,
            adapter=adapter,
            status=generation_status,
            prompts_done=80,
            prompts_total=80,
            tokens_per_second=tokens_per_second,
            comparisons_created=40,
            guardrails=PASSED if guardrails is None else guardrails,
        )
    return adapter


@pytest.fixture
def base(db: None) -> BaseModelVersion:
    return BaseModelVersion.objects.create(name="loop-base", source="/models/b")


@pytest.fixture
def campaign(db: None) -> Campaign:
    """An active campaign with the default generation settings (gate after
    20 comparisons, automatic promotion) and a policy that trains after 40
    new labels, at most every 10 minutes."""
    campaign = CampaignFactory()
    generation_settings_for(campaign)
    TrainingPolicy.objects.create(campaign=campaign)
    return campaign


@pytest.mark.django_db
def test_rounds_follow_adapter_creation_with_snapshot_training_generation_and_labels(
    campaign: Campaign, base: BaseModelVersion, make_user: Any
) -> None:
    """One round per policy adapter, oldest first: its snapshot's labels, its
    training job's wall time, its candidate round's tokens/s and guardrails,
    and the labels on its pairs so far. A reward adapter is no round."""
    annotator = make_user()
    seed = adapter_register(
        campaign=campaign,
        base_model=base,
        method="sft",
        peft_type="lora",
        storage_path="adapters/seed",
        metrics={},
    )
    labels(campaign, seed, base, wins=3, losses=2, annotator=annotator)
    first = trained_round(campaign, base, wall_seconds=90)
    labels(campaign, first, base, wins=6, losses=1, annotator=annotator)
    adapter_register(
        campaign=campaign,
        base_model=base,
        method="reward",
        peft_type="lora",
        storage_path="adapters/rm",
        metrics={},
    )
    second = trained_round(campaign, base, wall_seconds=45, tokens_per_second=88.0)

    loop = campaign_loop_get(campaign_id=campaign.pk)

    assert [(r.number, r.adapter_id) for r in loop.rounds] == [
        (1, seed.pk),
        (2, first.pk),
        (3, second.pk),
    ]
    seed_round, first_round, second_round = loop.rounds
    assert seed_round.snapshot is None and seed_round.training == []
    assert seed_round.generation is None and seed_round.labels == 5
    assert first_round.snapshot is not None and first_round.snapshot.labels == 5
    assert first_round.snapshot.preference_rows == 11
    assert [(t.method, t.status) for t in first_round.training] == [
        ("dpo", "succeeded")
    ]
    assert first_round.training_wall_seconds == 90.0
    assert first_round.generation is not None
    assert first_round.generation.tokens_per_second == 120.5
    assert first_round.generation.guardrails == PASSED
    assert first_round.generation.passed is True
    assert first_round.labels == 7
    assert first_round.vs_base.n == 7 and first_round.vs_base.wins == 6
    assert first_round.vs_base.rate == pytest.approx(6 / 7)
    assert first_round.vs_base.lower is not None
    assert first_round.vs_base.lower <= 6 / 7 <= first_round.vs_base.upper
    assert second_round.snapshot is not None and second_round.snapshot.labels == 12
    assert second_round.training_wall_seconds == 45.0
    assert second_round.generation is not None
    assert second_round.generation.tokens_per_second == 88.0
    assert second_round.labels == 0 and second_round.vs_base.rate is None
    assert loop.champion.adapter_id is None
    assert loop.champion.key == f"base:{base.pk}"
    assert [p[0] for p in loop.chart["series"][0]["points"]] == [1, 2]


@pytest.mark.django_db
def test_promoted_refused_and_retired_rounds_carry_their_decision_and_evidence(
    campaign: Campaign, base: BaseModelVersion, make_user: Any
) -> None:
    """Round 1 wins against the base and is promoted automatically with its
    evidence; round 2 fails its guardrails (refused, with the reason); round
    3 is retired by hand; round 4 waits, its win rate against the previous
    champion (the round's opponent) and the gate's n exactly as the
    promotion gate reads them. The champion is round 1."""
    annotator = make_user()
    first = trained_round(campaign, base)
    labels(campaign, first, base, wins=22, losses=3, annotator=annotator)
    assert promotion_tick() == 1
    refused = trained_round(
        campaign,
        base,
        guardrails={"passed": False, "violations": ["90% of its outputs loop"]},
    )
    AdapterEvent.objects.create(
        adapter=refused,
        action=AdapterEvent.Action.REFUSED,
        reason="90% of its outputs loop",
        evidence={"violations": ["90% of its outputs loop"]},
    )
    Adapter.objects.filter(pk=refused.pk).update(status=Adapter.Status.RETIRED)
    retired = trained_round(campaign, base)
    adapter_retire(adapter=retired, actor=None, reason="superseded by hand")
    waiting = trained_round(
        campaign, base, guardrails={**PASSED, "opponent_key": f"adapter:{first.pk}"}
    )
    labels(campaign, waiting, first, wins=4, losses=2, annotator=annotator)

    loop = campaign_loop_get(campaign_id=campaign.pk)

    one, two, three, four = loop.rounds
    assert one.promoted and one.gate.decision == "promoted"
    assert one.gate.n == 25 and one.gate.opponent == f"base:{base.pk}"
    assert one.gate.lower is not None and one.gate.lower > 0.5
    assert "automatic" in one.gate.text and not one.gate.override
    assert one.vs_base.n == 25 and one.vs_previous_champion.n == 25
    assert not two.promoted and two.gate.decision == "refused"
    assert two.gate.reason == "90% of its outputs loop"
    assert "90% of its outputs loop" in two.gate.text
    assert two.generation is not None and two.generation.passed is False
    assert three.gate.decision == "retired"
    assert three.gate.reason == "superseded by hand"
    assert four.gate.decision == "waiting" and not four.promoted
    assert four.vs_previous_champion.opponent == f"adapter:{first.pk}"
    assert four.vs_previous_champion.opponent_label == first.name
    assert four.vs_previous_champion.n == 6
    evidence = adapter_gate_evidence(adapter=Adapter.objects.get(pk=waiting.pk))
    assert four.gate.opponent == evidence["opponent"]
    assert (four.gate.n, four.gate.rate, four.gate.lower, four.gate.upper) == (
        evidence["n"],
        evidence["rate"],
        evidence["lower"],
        evidence["upper"],
    )
    assert (
        four.gate.text == f"waiting: 6 of 20 held-out comparisons against {first.name}"
    )
    assert four.vs_base.n == 0 and four.vs_base.rate is None
    assert loop.champion.adapter_id == first.pk and loop.champion.label == first.name
    assert loop.champion.since is not None
    # Round 2 and 3 paired against the champion too (replayed from events).
    assert two.vs_previous_champion.opponent == f"adapter:{first.pk}"
    assert loop.waiting.state == "gate"
    assert (
        loop.waiting.sentence
        == f"waiting for 14 more held-out comparisons of {waiting.name} vs the champion"
    )
    assert loop.waiting.comparisons == 6 and loop.waiting.comparisons_needed == 20


def _sentence(campaign: Campaign) -> tuple[str, str]:
    waiting = campaign_loop_get(campaign_id=campaign.pk).waiting
    return waiting.state, waiting.sentence


@pytest.mark.django_db
def test_waits_for_names_the_one_thing_the_loop_waits_for_in_each_state(
    campaign: Campaign, base: BaseModelVersion, make_user: Any
) -> None:
    """Labels short of the policy → how many more; enough labels inside the
    minimum interval → minutes left; both met → the scheduler's next check;
    a training job → its step; a candidate's round → prompts written; a
    candidate without enough comparisons → how many more; the policy off →
    loop off; the campaign paused → loop off."""
    annotator = make_user()
    seed = adapter_register(
        campaign=campaign,
        base_model=base,
        method="sft",
        peft_type="lora",
        storage_path="adapters/seed",
        metrics={},
    )
    labels(campaign, seed, base, wins=2, losses=1, annotator=annotator)
    AdapterEvent.objects.create(
        adapter=seed, action=AdapterEvent.Action.RETIRED, reason="old"
    )
    Adapter.objects.filter(pk=seed.pk).update(status=Adapter.Status.RETIRED)
    assert _sentence(campaign) == (
        "labels",
        "37 more labels before the next training (no pair is open for labeling)",
    )
    labels_state = campaign_loop_get(campaign_id=campaign.pk).waiting
    assert (labels_state.labels_since_snapshot, labels_state.labels_needed) == (3, 37)

    TrainingPolicy.objects.filter(campaign=campaign).update(
        min_new_preferences=3, last_triggered_at=timezone.now() - timedelta(minutes=2)
    )
    state, sentence = _sentence(campaign)
    assert state == "interval"
    assert sentence == "next training in 8 min (at least 10 min between trainings)"

    TrainingPolicy.objects.filter(campaign=campaign).update(last_triggered_at=None)
    assert _sentence(campaign) == (
        "scheduler",
        "training starts at the scheduler's next check (3 new labels)",
    )

    snap = snapshot(campaign)
    pipeline = TrainingPipeline.objects.create(
        campaign=campaign, kind="dpo", snapshot=snap
    )
    job = TrainingJob.objects.create(
        campaign=campaign,
        method="dpo",
        base_model=base,
        snapshot=snap,
        pipeline=pipeline,
        status=TrainingJob.Status.QUEUED,
    )
    assert _sentence(campaign) == (
        "training",
        f"training queued: DPO job {job.pk} waits for the GPU worker",
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING,
        started_at=timezone.now(),
        progress_step=12,
        progress_total=28,
    )
    assert _sentence(campaign) == (
        "training",
        f"training step 12 of 28 (DPO job {job.pk})",
    )
    pending = campaign_loop_get(campaign_id=campaign.pk)
    assert pending.active and pending.next_round is not None
    assert pending.next_round.pipeline_id == pipeline.pk
    assert [t.id for t in pending.next_round.training] == [job.pk]

    candidate = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/c",
        metrics={},
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.SUCCEEDED,
        finished_at=timezone.now(),
        progress_step=28,
        adapter=candidate,
    )
    TrainingPipeline.objects.filter(pk=pipeline.pk).update(status="succeeded")
    round_job = GenerationJob.objects.create(
        campaign=campaign,
        kind=GenerationJob.Kind.CANDIDATE,
        adapter=candidate,
        status=GenerationJob.Status.RUNNING,
        prompts_done=40,
        prompts_total=80,
    )
    loop = campaign_loop_get(campaign_id=campaign.pk)
    assert loop.next_round is None and loop.active
    assert (loop.waiting.state, loop.waiting.sentence) == (
        "generating",
        f"generating 40 of 80 prompts for {candidate.name}",
    )

    GenerationJob.objects.filter(pk=round_job.pk).update(
        status=GenerationJob.Status.SUCCEEDED, guardrails=PASSED
    )
    labels(campaign, candidate, base, wins=4, losses=2, annotator=annotator)
    loop = campaign_loop_get(campaign_id=campaign.pk)
    assert not loop.active
    assert (loop.waiting.state, loop.waiting.sentence) == (
        "gate",
        f"waiting for 14 more held-out comparisons of {candidate.name} vs the base model",
    )
    assert loop.rounds[-1].gate.text == (
        "waiting: 6 of 20 held-out comparisons against the base model (loop-base)"
    )

    TrainingPolicy.objects.filter(campaign=campaign).update(enabled=False)
    adapter_retire(adapter=candidate, actor=None, reason="by hand")
    assert _sentence(campaign) == ("off", "loop off: training policy disabled")

    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    assert _sentence(campaign) == ("off", "loop off: the campaign is paused")


@pytest.mark.django_db
def test_a_candidate_past_the_gate_waits_for_promotion_or_more_labels(
    campaign: Campaign, base: BaseModelVersion, make_user: Any
) -> None:
    """With the gate's comparisons in: a clear winner is promoted at the next
    check (or waits for an admin when automatic promotion is off); an
    undecided one waits for more comparisons, with its interval."""
    annotator = make_user()
    winner = trained_round(campaign, base)
    labels(campaign, winner, base, wins=24, losses=1, annotator=annotator)
    assert _sentence(campaign) == (
        "gate",
        f"promoting {winner.name} at the next promotion check",
    )
    GenerationSettings.objects.filter(campaign=campaign).update(auto_promote=False)
    assert _sentence(campaign) == (
        "gate",
        f"waiting for an admin to promote {winner.name} (automatic promotion is off)",
    )
    Adapter.objects.filter(pk=winner.pk).update(status=Adapter.Status.RETIRED)
    AdapterEvent.objects.create(adapter=winner, action=AdapterEvent.Action.RETIRED)
    close = trained_round(campaign, base)
    labels(campaign, close, base, wins=11, losses=10, annotator=annotator)
    state, sentence = _sentence(campaign)
    assert state == "gate"
    assert sentence.startswith(
        f"waiting for more held-out comparisons of {close.name} vs the base model: win rate 0.52"
    )
    assert sentence.endswith("over 21 is not decisive yet")


@pytest.mark.django_db
def test_the_loop_reads_in_a_fixed_number_of_queries_whatever_its_rounds(
    campaign: Campaign,
    base: BaseModelVersion,
    make_user: Any,
    django_assert_max_num_queries: Any,
) -> None:
    """One round or six, with labels, events and generation jobs: at most 13
    queries (no query per round)."""
    annotator = make_user()
    first = trained_round(campaign, base)
    labels(campaign, first, base, wins=3, losses=1, annotator=annotator)
    with django_assert_max_num_queries(13):
        assert len(campaign_loop_get(campaign_id=campaign.pk).rounds) == 1
    for _ in range(5):
        adapter = trained_round(campaign, base)
        labels(campaign, adapter, first, wins=2, losses=2, annotator=annotator)
        AdapterEvent.objects.create(
            adapter=adapter, action=AdapterEvent.Action.RETIRED, reason="r"
        )
    with django_assert_max_num_queries(13):
        assert len(campaign_loop_get(campaign_id=campaign.pk).rounds) == 6


@pytest.mark.django_db
def test_reading_a_new_campaign_creates_nothing_and_a_missing_one_is_not_found(
    db: None,
) -> None:
    """A campaign with no policy and no generation settings is read with the
    defaults (no row is created); an unknown id raises ``NotFound``."""
    campaign = CampaignFactory()

    loop = campaign_loop_get(campaign_id=campaign.pk)

    assert loop.rounds == [] and loop.next_round is None and not loop.active
    assert loop.waiting.sentence == (
        "40 more labels before the next training (no pair is open for labeling)"
    )
    assert loop.champion.label == "the base model"
    assert not TrainingPolicy.objects.filter(campaign=campaign).exists()
    assert not GenerationSettings.objects.filter(campaign=campaign).exists()
    with pytest.raises(NotFound, match="No such campaign"):
        campaign_loop_get(campaign_id=campaign.pk + 1000)


@pytest.mark.django_db
def test_a_failed_training_shows_as_the_next_round_and_labels_count_from_its_snapshot(
    campaign: Campaign, base: BaseModelVersion, make_user: Any
) -> None:
    """The newest pipeline failed before it made an adapter: it is the
    pending round with its job's error, nothing runs, and the labels the next
    training needs count from that pipeline's snapshot (as the scheduler
    counts them)."""
    annotator = make_user()
    first = trained_round(campaign, base)
    labels(campaign, first, base, wins=3, losses=2, annotator=annotator)
    AdapterEvent.objects.create(adapter=first, action=AdapterEvent.Action.RETIRED)
    Adapter.objects.filter(pk=first.pk).update(status=Adapter.Status.RETIRED)
    snap = snapshot(campaign)
    pipeline = TrainingPipeline.objects.create(
        campaign=campaign, kind="dpo", snapshot=snap, status="failed"
    )
    job = TrainingJob.objects.create(
        campaign=campaign,
        method="dpo",
        base_model=base,
        snapshot=snap,
        pipeline=pipeline,
        status=TrainingJob.Status.FAILED,
        error="CUDA out of memory",
    )
    labels(campaign, first, base, wins=1, losses=1, annotator=annotator)

    loop = campaign_loop_get(campaign_id=campaign.pk)

    assert len(loop.rounds) == 1 and not loop.active
    assert loop.next_round is not None
    assert (loop.next_round.pipeline_id, loop.next_round.status) == (
        pipeline.pk,
        "failed",
    )
    assert loop.next_round.snapshot is not None
    assert loop.next_round.snapshot.labels == 5
    assert [(t.id, t.error) for t in loop.next_round.training] == [
        (job.pk, "CUDA out of memory")
    ]
    assert (loop.waiting.state, loop.waiting.sentence) == (
        "labels",
        "38 more labels before the next training (no pair is open for labeling)",
    )
