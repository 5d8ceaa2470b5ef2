"""Serving services: model names to versions, alias routing (canary, A/B,
sticky users), the served-response record and traffic pairs. No model is
loaded: adapter folders only need their config file."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labeling.models import Campaign, Comparison, Prompt
from models_hub.models import Adapter, BaseModelVersion, Deployment, ServedResponse
from models_hub.services.registry import adapter_register
from models_hub.services.serving import (
    ModelNotFound,
    Route,
    alias_state,
    base_version,
    route_pick,
    served_model_list,
    served_response_record,
    served_version_get,
    serving_route,
    traffic_pair_record,
    user_point,
)
from tests.labeling.factories import CampaignFactory

ROUTINGS = 2000


def _adapter(
    campaign: Campaign, base: BaseModelVersion, name: str, **fields: Any
) -> Adapter:
    rel = Path("adapters") / f"serving-svc-{name}"
    folder = Path(settings.STORAGE_ROOT) / rel
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method=fields.pop("method", "dpo"),
        peft_type="lora",
        storage_path=str(rel),
        metrics={},
    )
    if fields:
        Adapter.objects.filter(pk=adapter.pk).update(**fields)
        adapter.refresh_from_db()
    return adapter


@pytest.fixture
def setup(db: None) -> dict[str, Any]:
    BaseModelVersion.objects.filter(is_default=True).update(is_default=False)
    base = BaseModelVersion.objects.create(
        name="tiny", source="/nowhere", is_default=True
    )
    campaign = CampaignFactory()
    champion = _adapter(campaign, base, "champion", status=Adapter.Status.CHAMPION)
    candidate = _adapter(campaign, base, "candidate")
    return {
        "base": base,
        "campaign": campaign,
        "champion": champion,
        "candidate": candidate,
    }


def _deploy(setup: dict[str, Any], **fields: Any) -> Deployment:
    return Deployment.objects.create(campaign=setup["campaign"], **fields)


def _alias(setup: dict[str, Any]) -> str:
    return f"campaign-{setup['campaign'].pk}/champion"


def _within_four_sigma(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_names_resolve_to_concrete_versions(setup: dict[str, Any]) -> None:
    base, champion = setup["base"], setup["champion"]
    assert served_version_get(name="base", base=base).name == f"base-{base.pk}"
    assert served_version_get(name=f"base-{base.pk}", base=base).adapter is None
    version = served_version_get(name=f"adapter-{champion.pk}", base=base)
    assert version.adapter == champion and not version.merged
    assert version.adapter_path == str(
        Path(settings.STORAGE_ROOT) / champion.storage_path
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"serving_enabled": False}, "switched off"),
        ({"status": Adapter.Status.RETIRED}, "retired"),
        ({"role": Adapter.Role.REWARD}, "reward model"),
        ({"merged_path": ""}, "merged export"),
    ],
)
def test_unservable_adapters_are_model_not_found(
    setup: dict[str, Any], change: dict[str, Any], why: str
) -> None:
    candidate = setup["candidate"]
    Adapter.objects.filter(pk=candidate.pk).update(**change)
    name = f"adapter-{candidate.pk}" + ("-merged" if "merged_path" in change else "")
    with pytest.raises(ModelNotFound, match=why):
        served_version_get(name=name, base=setup["base"])


def test_other_bases_and_unknown_names_are_not_found(setup: dict[str, Any]) -> None:
    other = BaseModelVersion.objects.create(name="other", source="/elsewhere")
    foreign = _adapter(setup["campaign"], other, "foreign")
    for name in (f"base-{other.pk}", f"adapter-{foreign.pk}", "adapter-x", "gpt-4", ""):
        with pytest.raises(ModelNotFound):
            serving_route(name=name, base=setup["base"])


def test_canary_share_holds_over_2000_routings_and_users_are_sticky(
    setup: dict[str, Any],
) -> None:
    """candidate_share 0.1: the candidate answers 10% within 4 binomial
    sigma, with and without `user`; one user always gets one arm."""
    _deploy(
        setup,
        mode=Deployment.Mode.CANARY,
        candidate=setup["candidate"],
        candidate_share=0.1,
    )
    state = alias_state(campaign_id=setup["campaign"].pk, base=setup["base"])
    rng = random.Random(1)
    drawn = [
        route_pick(state, requested="a", user="", rng=rng) for _ in range(ROUTINGS)
    ]
    hits = sum(r.arm == ServedResponse.Arm.CANDIDATE for r in drawn)
    assert _within_four_sigma(hits, ROUTINGS, 0.1), hits
    assert {r.version.name for r in drawn if r.arm == "candidate"} == {
        f"adapter-{setup['candidate'].pk}"
    }
    by_user = [
        route_pick(state, requested="a", user=f"user-{i}", rng=rng)
        for i in range(ROUTINGS)
    ]
    hits = sum(r.arm == ServedResponse.Arm.CANDIDATE for r in by_user)
    assert _within_four_sigma(hits, ROUTINGS, 0.1), hits
    for i in range(0, ROUTINGS, 50):
        arms = {
            route_pick(state, requested="a", user=f"user-{i}", rng=rng).arm
            for _ in range(5)
        }
        assert arms == {by_user[i].arm}


def test_ab_splits_evenly_and_champion_only_sends_everything_to_the_champion(
    setup: dict[str, Any],
) -> None:
    deployment = _deploy(setup, mode=Deployment.Mode.AB, candidate=setup["candidate"])
    state = alias_state(campaign_id=setup["campaign"].pk, base=setup["base"])
    rng = random.Random(2)
    hits = sum(
        route_pick(state, requested="a", user=f"u{i}", rng=rng).arm == "candidate"
        for i in range(ROUTINGS)
    )
    assert _within_four_sigma(hits, ROUTINGS, 0.5), hits
    deployment.mode, deployment.candidate = Deployment.Mode.CHAMPION, None
    deployment.save()
    state = alias_state(campaign_id=setup["campaign"].pk, base=setup["base"])
    assert {
        route_pick(state, requested="a", user="", rng=rng).arm for _ in range(200)
    } == {"champion"}


def test_the_user_point_is_sha256_of_deployment_and_user() -> None:
    import hashlib

    digest = hashlib.sha256(b"7:alice").digest()
    assert (
        user_point(deployment_id=7, user="alice")
        == int.from_bytes(digest[:8], "big") / 2**64
    )
    assert user_point(deployment_id=8, user="alice") != user_point(
        deployment_id=7, user="alice"
    )


def test_an_alias_without_champion_serves_the_base_and_samples_nothing_against_itself(
    setup: dict[str, Any],
) -> None:
    Adapter.objects.filter(pk=setup["champion"].pk).update(
        status=Adapter.Status.CANDIDATE
    )
    _deploy(setup, sample_share=1.0)
    route = serving_route(name=_alias(setup), base=setup["base"])
    assert route.version.name == f"base-{setup['base'].pk}"
    assert not route.sample and route.other is None


def test_sampling_pairs_the_champion_with_the_candidate_or_the_base(
    setup: dict[str, Any],
) -> None:
    deployment = _deploy(
        setup,
        mode=Deployment.Mode.CANARY,
        candidate=setup["candidate"],
        candidate_share=0.5,
        sample_share=1.0,
    )
    state = alias_state(campaign_id=setup["campaign"].pk, base=setup["base"])
    rng = random.Random(3)
    for _ in range(50):
        route = route_pick(state, requested="a", user="", rng=rng)
        assert route.sample
        assert {route.version.name, route.other.name} == {
            f"adapter-{setup['champion'].pk}",
            f"adapter-{setup['candidate'].pk}",
        }
    deployment.mode, deployment.candidate = Deployment.Mode.CHAMPION, None
    deployment.sample_share = 0.25
    deployment.save()
    state = alias_state(campaign_id=setup["campaign"].pk, base=setup["base"])
    routes = [
        route_pick(state, requested="a", user="", rng=rng) for _ in range(ROUTINGS)
    ]
    assert _within_four_sigma(sum(r.sample for r in routes), ROUTINGS, 0.25)
    assert {r.other.name for r in routes if r.sample} == {f"base-{setup['base'].pk}"}


def test_the_model_list_names_what_can_be_served(setup: dict[str, Any]) -> None:
    Adapter.objects.filter(pk=setup["candidate"].pk).update(serving_enabled=False)
    archived = CampaignFactory(status=Campaign.Status.ARCHIVED)
    names = {m.name for m in served_model_list(base=setup["base"])}
    assert f"adapter-{setup['champion'].pk}" in names
    assert f"adapter-{setup['candidate'].pk}" not in names
    assert _alias(setup) in names
    assert f"campaign-{archived.pk}/champion" not in names


def _record(
    setup: dict[str, Any], route: Route, text: str, prompt: Any
) -> ServedResponse:
    return served_response_record(
        public_id=f"chatcmpl-{random.random()}",
        endpoint=ServedResponse.Endpoint.CHAT,
        route=route,
        caller=None,
        end_user="",
        prompt=prompt,
        text=text,
        finish_reason="stop",
        prompt_tokens=5,
        completion_tokens=3,
        latency_ms=12.0,
    )


def test_a_traffic_pair_is_queued_once_with_lineage(setup: dict[str, Any]) -> None:
    _deploy(setup, sample_share=1.0)
    route = serving_route(name=_alias(setup), base=setup["base"], rng=random.Random(0))
    assert route.sample and route.other.name == f"base-{setup['base'].pk}"
    messages = [{"role": "user", "content": "hello there"}]
    served = _record(setup, route, "champion says hi", messages)
    assert served.sampled and served.arm == "champion"

    comparison = traffic_pair_record(
        public_id=served.public_id,
        other=route.other,
        other_text="base says hi",
        other_finish_reason="length",
        other_completion_tokens=4,
        decoding={"temperature": 1.0},
    )
    assert comparison is not None and comparison.status == Comparison.Status.OPEN
    served.refresh_from_db()
    assert served.comparison == comparison
    prompt = Prompt.objects.get(campaign=setup["campaign"])
    assert prompt.messages == messages and prompt.metadata == {"source": "traffic"}
    assert not prompt.is_golden
    texts = {comparison.completion_a.text, comparison.completion_b.text}
    assert texts == {"champion says hi", "base says hi"}
    for completion in (comparison.completion_a, comparison.completion_b):
        assert completion.generation["source"] == "traffic"
        assert completion.generation["served_response"] == served.public_id
        assert completion.generation["base_model"] == setup["base"].pk
        assert completion.html  # rendered once, when stored
    base_side = next(
        c
        for c in (comparison.completion_a, comparison.completion_b)
        if c.adapter is None
    )
    assert base_side.generation["finished"] is False
    # Recorded twice: still one pair.
    again = traffic_pair_record(
        public_id=served.public_id,
        other=route.other,
        other_text="base says hi",
        other_finish_reason="stop",
        other_completion_tokens=4,
        decoding={},
    )
    assert again == comparison
    assert Comparison.objects.filter(campaign=setup["campaign"]).count() == 1


def test_identical_answers_make_no_pair(setup: dict[str, Any]) -> None:
    route = Route(
        requested=_alias(setup),
        version=served_version_get(
            name=f"adapter-{setup['champion'].pk}", base=setup["base"]
        ),
        campaign=setup["campaign"],
        arm=ServedResponse.Arm.CHAMPION,
        other=base_version(setup["base"]),
        sample=True,
    )
    served = _record(setup, route, "same", "a plain prompt")
    assert (
        traffic_pair_record(
            public_id=served.public_id,
            other=route.other,
            other_text="same",
            other_finish_reason="stop",
            other_completion_tokens=1,
            decoding={},
        )
        is None
    )
    assert Prompt.objects.get(campaign=setup["campaign"]).text == "a plain prompt"
    assert not Comparison.objects.exists()
