"""Automatic promotion (``promotion_tick``): candidates whose round passed its
guardrails become champion on a significant human win against the champion
(or the base); clear losers are retired. Database only, no model."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import Comparison, Completion, Preference
from models_hub.models import Adapter, AdapterEvent, BaseModelVersion, GenerationJob
from models_hub.selectors import adapter_gate_evidence
from models_hub.services.promotion import promotion_tick
from models_hub.services.registry import (
    adapter_register,
    adapter_rollback,
    generation_settings_for,
)
from tests.labeling.factories import CampaignFactory, PromptFactory


@pytest.fixture
def campaign(db: None) -> Any:
    """A campaign that promotes automatically behind the gate, deciding after
    20 labeled comparisons (the defaults)."""
    campaign = CampaignFactory()
    row = generation_settings_for(campaign)
    assert row.auto_promote and row.require_significant_win and row.retire_losers
    assert row.gate_min_comparisons == 20
    return campaign


@pytest.fixture
def base(db: None) -> BaseModelVersion:
    return BaseModelVersion.objects.create(name="b", source="/models/b")


def _candidate(
    campaign: Any, base: BaseModelVersion, *, guardrails: dict[str, Any] | None = None
) -> Adapter:
    """A registered policy adapter; with ``guardrails``, its finished round."""
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )
    if guardrails is not None:
        GenerationJob.objects.create(
            campaign=campaign,
            kind=GenerationJob.Kind.CANDIDATE,
            adapter=adapter,
            status=GenerationJob.Status.SUCCEEDED,
            guardrails=guardrails,
        )
    return adapter


PASSED = {"passed": True, "violations": [], "candidate": {}, "opponent": {}}
FAILED = {"passed": False, "violations": ["90% of its outputs are empty or loops"]}


def _labels(
    campaign: Any,
    first: Adapter,
    second: Adapter | BaseModelVersion,
    *,
    wins: int,
    losses: int,
    make_user: Any,
) -> None:
    """``wins + losses`` labeled pairs of ``first`` against ``second`` (an
    adapter, or a base model alone); ``first`` is preferred ``wins`` times."""
    annotator = make_user()
    for i in range(wins + losses):
        prompt = PromptFactory(campaign=campaign, split="test")
        a = Completion.objects.create(
            prompt=prompt,
            text=f"first {i}",
            content_hash=f"first-{first.pk}-{i}",
            origin="model",
            adapter=first,
            base_model=first.base_model,
            source_label="first",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"second {i}",
            content_hash=f"second-{i}",
            origin="model",
            adapter=second if isinstance(second, Adapter) else None,
            base_model=second.base_model if isinstance(second, Adapter) else second,
            source_label="second",
        )
        comparison = Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
        Preference.objects.create(
            comparison=comparison,
            annotator=annotator,
            a_on_left=True,
            choice="a" if i < wins else "b",
        )


def _status(adapter: Adapter) -> str:
    adapter.refresh_from_db()
    return adapter.status


@pytest.mark.django_db
def test_a_candidate_that_clearly_beats_the_base_is_promoted_with_its_evidence(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """With no champion yet, a candidate whose round passed its guardrails and
    that won 22 of 25 labels against the base becomes champion; the promotion
    event records the evidence, no actor and no override."""
    adapter = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, adapter, base, wins=22, losses=3, make_user=make_user)

    assert promotion_tick() == 1

    assert _status(adapter) == Adapter.Status.CHAMPION
    event = AdapterEvent.objects.get(adapter=adapter, action="promoted")
    assert event.evidence["opponent"] == f"base:{base.pk}"
    assert event.evidence["n"] == 25 and event.evidence["lower"] > 0.5
    assert event.actor is None and not event.override
    assert event.previous_champion is None
    assert event.reason.startswith("automatic")
    # Nothing left to decide: a second tick changes nothing.
    assert promotion_tick() == 0


@pytest.mark.django_db
def test_candidates_without_a_passed_round_are_never_promoted(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """A candidate whose round failed its guardrails, and one with no round at
    all, stay candidates however clearly they win."""
    refused = _candidate(campaign, base, guardrails=FAILED)
    unmeasured = _candidate(campaign, base)
    for adapter in (refused, unmeasured):
        _labels(campaign, adapter, base, wins=25, losses=0, make_user=make_user)

    assert promotion_tick() == 0

    assert _status(refused) == _status(unmeasured) == Adapter.Status.CANDIDATE
    assert not AdapterEvent.objects.filter(action="promoted").exists()


@pytest.mark.django_db
def test_nothing_is_promoted_or_retired_when_automatic_promotion_is_off(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """``auto_promote=False`` leaves a clear winner and a clear loser alone."""
    row = generation_settings_for(campaign)
    row.auto_promote = False
    row.save()
    winner = _candidate(campaign, base, guardrails=PASSED)
    loser = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, winner, base, wins=25, losses=0, make_user=make_user)
    _labels(campaign, loser, base, wins=0, losses=25, make_user=make_user)

    assert promotion_tick() == 0

    assert _status(winner) == _status(loser) == Adapter.Status.CANDIDATE


@pytest.mark.django_db
def test_a_clear_loser_is_retired_with_the_reason_recorded(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """A candidate that lost 22 of 25 labels to the base is retired when the
    campaign retires losers; the event says whom it lost to and how badly.
    Without ``retire_losers`` it stays a candidate."""
    kept = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, kept, base, wins=3, losses=22, make_user=make_user)
    row = generation_settings_for(campaign)
    row.retire_losers = False
    row.save()
    assert promotion_tick() == 0
    assert _status(kept) == Adapter.Status.CANDIDATE

    row.retire_losers = True
    row.save()
    assert promotion_tick() == 1

    assert _status(kept) == Adapter.Status.RETIRED
    event = AdapterEvent.objects.get(adapter=kept, action="retired")
    assert event.actor is None
    assert f"lost to base:{base.pk}" in event.reason
    assert "over 25 labels" in event.reason


@pytest.mark.django_db
def test_an_undecided_candidate_is_neither_promoted_nor_retired(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """Fewer labels than the gate needs, or an even split, decide nothing."""
    few = _candidate(campaign, base, guardrails=PASSED)
    even = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, few, base, wins=10, losses=0, make_user=make_user)
    _labels(campaign, even, base, wins=13, losses=12, make_user=make_user)

    assert promotion_tick() == 0

    assert _status(few) == _status(even) == Adapter.Status.CANDIDATE


@pytest.mark.django_db
def test_of_two_passing_candidates_the_one_with_the_higher_lower_bound_wins(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """Both beat the base; the one whose lower 95% bound is higher is
    promoted, and the other is then judged against the new champion, with no
    labels against it yet (so it is left alone)."""
    good = _candidate(campaign, base, guardrails=PASSED)
    better = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, good, base, wins=21, losses=4, make_user=make_user)
    _labels(campaign, better, base, wins=25, losses=0, make_user=make_user)
    assert (
        adapter_gate_evidence(adapter=better)["lower"]
        > adapter_gate_evidence(adapter=good)["lower"]
        > 0.5
    )

    assert promotion_tick() == 1

    assert _status(better) == Adapter.Status.CHAMPION
    assert _status(good) == Adapter.Status.CANDIDATE
    evidence = adapter_gate_evidence(adapter=good)
    assert evidence["opponent"] == f"adapter:{better.pk}" and evidence["n"] == 0
    assert promotion_tick() == 0


@pytest.mark.django_db
def test_after_a_promotion_the_next_candidate_must_beat_the_new_champion(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """Wins against the base no longer count once there is a champion: the
    next candidate is promoted on wins against the champion, with that
    opponent in its evidence. The demoted champion stays a candidate (not
    retired as a loser), so one rollback brings it back."""
    first = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, first, base, wins=25, losses=0, make_user=make_user)
    assert promotion_tick() == 1
    second = _candidate(campaign, base, guardrails=PASSED)
    _labels(campaign, second, base, wins=25, losses=0, make_user=make_user)

    assert promotion_tick() == 0
    assert adapter_gate_evidence(adapter=second)["opponent"] == f"adapter:{first.pk}"

    _labels(campaign, second, first, wins=22, losses=3, make_user=make_user)
    assert promotion_tick() == 1

    assert _status(second) == Adapter.Status.CHAMPION
    event = AdapterEvent.objects.get(adapter=second, action="promoted")
    assert event.evidence["opponent"] == f"adapter:{first.pk}"
    assert event.evidence["n"] == 25 and event.previous_champion_id == first.pk
    # The old champion lost those same labels, yet it is the rollback target.
    assert promotion_tick() == 0
    assert _status(first) == Adapter.Status.CANDIDATE
    back = adapter_rollback(campaign=campaign, role="policy", actor=None)
    assert back is not None and back.pk == first.pk
    assert _status(second) == Adapter.Status.RETIRED
