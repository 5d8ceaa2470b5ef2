"""Promotion, rollback, retirement and the promotion gate."""

from __future__ import annotations

from typing import Any

import pytest

from core.exceptions import Conflict
from labeling.models import Comparison, Completion, Preference
from models_hub.exceptions import PromotionBlocked
from models_hub.models import Adapter, AdapterEvent, BaseModelVersion
from models_hub.selectors import adapter_gate_evidence
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    adapter_retire,
    adapter_rollback,
    generation_settings_for,
)
from tests.labeling.factories import CampaignFactory, PromptFactory


@pytest.fixture
def campaign(db: None) -> Any:
    """A campaign whose promotion gate is off: these tests are about the
    registry's mechanics; the gate tests turn it on."""
    campaign = CampaignFactory()
    settings_row = generation_settings_for(campaign)
    settings_row.require_significant_win = False
    settings_row.save()
    return campaign


def _gate_on(campaign: Any, *, min_comparisons: int = 5) -> None:
    settings_row = generation_settings_for(campaign)
    settings_row.require_significant_win = True
    settings_row.gate_min_comparisons = min_comparisons
    settings_row.save()


@pytest.fixture
def base(db: None) -> BaseModelVersion:
    return BaseModelVersion.objects.create(name="b", source="/models/b")


def _adapter(campaign: Any, base: BaseModelVersion, method: str = "dpo") -> Adapter:
    return adapter_register(
        campaign=campaign,
        base_model=base,
        method=method,
        peft_type="lora",
        storage_path=f"adapters/x-{method}",
        metrics={},
    )


@pytest.mark.django_db
def test_versions_increase_per_campaign_and_role(
    campaign: Any, base: BaseModelVersion
) -> None:
    p1, p2, r1 = (
        _adapter(campaign, base),
        _adapter(campaign, base),
        _adapter(campaign, base, "reward"),
    )
    assert (p1.version, p2.version, r1.version) == (1, 2, 1)
    assert (p1.role, r1.role) == ("policy", "reward")
    assert AdapterEvent.objects.filter(action="registered").count() == 3


@pytest.mark.django_db
def test_promote_then_roll_back_restores_the_previous_champion_in_one_step(
    campaign: Any, base: BaseModelVersion, admin_user: Any
) -> None:
    v1, v2 = _adapter(campaign, base), _adapter(campaign, base)
    adapter_promote(adapter=v1, actor=admin_user)
    adapter_promote(adapter=v2, actor=admin_user)
    v1.refresh_from_db()
    assert v1.status == "candidate"
    back = adapter_rollback(
        campaign=campaign, role="policy", actor=admin_user, reason="regression"
    )
    v2.refresh_from_db()
    assert back.pk == v1.pk and back.status == "champion" and v2.status == "retired"
    assert Adapter.objects.filter(campaign=campaign, status="champion").count() == 1
    event = AdapterEvent.objects.filter(action="rolled_back").get()
    assert (
        event.adapter_id == v1.pk
        and event.previous_champion_id == v2.pk
        and event.actor == admin_user
    )
    # v1 was the first champion: rolling it back leaves the base serving.
    assert adapter_rollback(campaign=campaign, role="policy", actor=admin_user) is None
    assert not Adapter.objects.filter(campaign=campaign, status="champion").exists()
    assert AdapterEvent.objects.filter(action="rolled_back").first().evidence == {
        "to": "base"
    }
    with pytest.raises(Conflict, match="no champion to roll back"):
        adapter_rollback(campaign=campaign, role="policy", actor=admin_user)


@pytest.mark.django_db
def test_one_champion_per_role(campaign: Any, base: BaseModelVersion) -> None:
    policy, reward = _adapter(campaign, base), _adapter(campaign, base, "reward")
    adapter_promote(adapter=policy, actor=None)
    adapter_promote(adapter=reward, actor=None)
    assert set(
        Adapter.objects.filter(status="champion").values_list("role", flat=True)
    ) == {"policy", "reward"}
    with pytest.raises(Conflict, match="already the champion"):
        adapter_promote(adapter=policy, actor=None)
    with pytest.raises(Conflict, match="retiring the champion"):
        adapter_retire(adapter=policy, actor=None)


def _human_labels(
    campaign: Any,
    winner: Adapter,
    loser: Adapter | BaseModelVersion,
    *,
    wins: int,
    losses: int,
    make_user: Any,
    split: str = "test",
    golden: bool = False,
    offset: int = 0,
) -> None:
    """``wins + losses`` labels of ``winner`` against ``loser`` on new prompts
    of ``split`` (held-out by default: the gate counts only those)."""
    for i in range(offset, offset + wins + losses):
        prompt = PromptFactory(campaign=campaign, split=split, is_golden=golden)
        a = Completion.objects.create(
            prompt=prompt,
            text=f"w{i}",
            content_hash=f"w{i}",
            origin="model",
            adapter=winner,
            base_model=winner.base_model,
            source_label="w",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"l{i}",
            content_hash=f"l{i}",
            origin="model",
            adapter=loser if isinstance(loser, Adapter) else None,
            base_model=loser.base_model if isinstance(loser, Adapter) else loser,
            source_label="l",
        )
        comparison = Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
        Preference.objects.create(
            comparison=comparison,
            annotator=make_user(),
            a_on_left=True,
            choice="a" if i < offset + wins else "b",
        )


@pytest.mark.django_db
def test_the_gate_counts_only_labels_on_held_out_prompts(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """Wins on train and validation prompts (data the next snapshot trains
    on) do not open the gate; wins on test-split and golden prompts do."""
    _gate_on(campaign, min_comparisons=5)
    candidate = _adapter(campaign, base)
    for offset, split in ((0, "train"), (100, "val")):
        _human_labels(
            campaign,
            candidate,
            base,
            wins=10,
            losses=0,
            make_user=make_user,
            split=split,
            offset=offset,
        )
    evidence = adapter_gate_evidence(adapter=candidate)
    assert evidence["n"] == 0 and evidence["prompts"] == "held-out"
    with pytest.raises(PromotionBlocked, match="5 labeled held-out comparisons"):
        adapter_promote(adapter=candidate, actor=None)

    _human_labels(
        campaign, candidate, base, wins=3, losses=0, make_user=make_user, offset=200
    )
    _human_labels(
        campaign,
        candidate,
        base,
        wins=3,
        losses=0,
        make_user=make_user,
        split="train",
        golden=True,
        offset=300,
    )
    assert adapter_gate_evidence(adapter=candidate)["n"] == 6
    adapter_promote(adapter=candidate, actor=None)
    assert Adapter.objects.get(pk=candidate.pk).status == "champion"


@pytest.mark.django_db
def test_promotion_gate_needs_a_significant_win_or_a_recorded_override(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    champion, candidate = _adapter(campaign, base), _adapter(campaign, base)
    adapter_promote(adapter=champion, actor=None)
    _gate_on(campaign)
    _human_labels(campaign, candidate, champion, wins=6, losses=4, make_user=make_user)
    with pytest.raises(PromotionBlocked, match="lower 95% bound"):
        adapter_promote(adapter=candidate, actor=None)
    with pytest.raises(Conflict, match="Say why"):
        adapter_promote(adapter=candidate, actor=None, override=True)
    adapter_promote(adapter=candidate, actor=None, override=True, reason="urgent fix")
    event = AdapterEvent.objects.get(adapter=candidate, action="promoted")
    assert event.override and event.reason == "urgent fix" and event.evidence["n"] == 10


@pytest.mark.django_db
def test_promotion_gate_passes_a_clear_winner(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    champion, candidate = _adapter(campaign, base), _adapter(campaign, base)
    adapter_promote(adapter=champion, actor=None)
    _gate_on(campaign)
    _human_labels(
        campaign, candidate, champion, wins=40, losses=10, make_user=make_user
    )
    adapter_promote(adapter=candidate, actor=None)
    candidate.refresh_from_db()
    assert candidate.status == "champion"
    assert (
        AdapterEvent.objects.get(adapter=candidate, action="promoted").evidence["lower"]
        > 0.5
    )


@pytest.mark.django_db
def test_the_first_candidate_needs_evidence_against_the_base(
    campaign: Any, base: BaseModelVersion, make_user: Any
) -> None:
    """With no champion the gate compares against the base model: no labels,
    no promotion (only an override with a reason); enough wins, promotion
    with the evidence recorded."""
    _gate_on(campaign, min_comparisons=20)
    first = _adapter(campaign, base)
    with pytest.raises(PromotionBlocked, match="needs 20 labeled held-out comparisons"):
        adapter_promote(adapter=first, actor=None)
    _human_labels(campaign, first, base, wins=22, losses=3, make_user=make_user)
    adapter_promote(adapter=first, actor=None)
    event = AdapterEvent.objects.get(adapter=first, action="promoted")
    assert event.evidence["opponent"] == f"base:{base.pk}"
    assert event.evidence["n"] == 25 and event.evidence["lower"] > 0.5
    assert not event.override


@pytest.mark.django_db
def test_a_new_campaign_gates_promotion_by_default(
    base: BaseModelVersion, make_user: Any
) -> None:
    """The default gate is on: a candidate that won 41% of 40 comparisons
    against the champion does not take its place."""
    campaign = CampaignFactory()
    settings_row = generation_settings_for(campaign)
    assert settings_row.require_significant_win and settings_row.auto_promote
    champion, candidate = _adapter(campaign, base), _adapter(campaign, base)
    adapter_promote(adapter=champion, actor=None, override=True, reason="seed")
    _human_labels(
        campaign, candidate, champion, wins=16, losses=24, make_user=make_user
    )
    with pytest.raises(PromotionBlocked, match="lower 95% bound"):
        adapter_promote(adapter=candidate, actor=None)
