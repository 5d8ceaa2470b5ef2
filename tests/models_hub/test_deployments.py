"""Deployment management: changes recorded with their before and after,
rollback as one recorded step, refusals that change nothing, the candidate
leaving when it is promoted, retired, rolled back to or switched off, the
serving switch, and callers' feedback. Database only, no model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.exceptions import Conflict, NotFound
from models_hub import selectors
from models_hub.exceptions import DeploymentRefused
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    Deployment,
    DeploymentChange,
    ServedFeedback,
    ServedResponse,
)
from models_hub.services.deployments import (
    adapter_serving_set,
    deployment_get_or_create,
    deployment_rollback,
    deployment_update,
    served_feedback_record,
)
from models_hub.services.generation import _refuse as generation_refuse
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    adapter_retire,
    adapter_rollback,
    base_model_default,
)
from tests.labeling.factories import CampaignFactory


def _register(campaign: Any, base: BaseModelVersion, method: str = "dpo") -> Adapter:
    return adapter_register(
        campaign=campaign,
        base_model=base,
        method=method,
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )


@pytest.fixture
def setup(db: None, make_user: Any) -> dict[str, Any]:
    """A campaign with a policy champion (v1), two policy candidates (v2,
    v3) and a reward model, all over the default base; an admin."""
    base = base_model_default()
    campaign = CampaignFactory()
    champion = _register(campaign, base)
    adapter_promote(adapter=champion, actor=None, override=True, reason="seed")
    return {
        "campaign": campaign,
        "base": base,
        "champion": champion,
        "candidate": _register(campaign, base),
        "other": _register(campaign, base),
        "reward": _register(campaign, base, method="reward"),
        "admin": make_user("admin"),
    }


def _state(deployment: Deployment) -> tuple[Any, ...]:
    deployment.refresh_from_db()
    return (
        deployment.mode,
        deployment.candidate_id,
        deployment.candidate_share,
        deployment.sample_share,
    )


def test_update_records_the_change_with_before_after_actor_and_reason(
    setup: dict[str, Any],
) -> None:
    """A canary change is saved and recorded with both states, who and why."""
    deployment = deployment_get_or_create(setup["campaign"])
    deployment_update(
        deployment=deployment,
        actor=setup["admin"],
        mode="canary",
        candidate=setup["candidate"],
        candidate_share=0.1,
        sample_share=0.2,
        reason="try v2 on 10%",
    )
    assert _state(deployment) == ("canary", setup["candidate"].pk, 0.1, 0.2)
    assert deployment.updated_by == setup["admin"]
    change = DeploymentChange.objects.get(deployment=deployment)
    assert change.action == DeploymentChange.Action.UPDATED
    assert change.actor == setup["admin"]
    assert change.reason == "try v2 on 10%"
    assert change.before == {
        "mode": "champion",
        "candidate": None,
        "candidate_name": None,
        "candidate_share": 0.05,
        "sample_share": 0.0,
    }
    assert change.after["mode"] == "canary"
    assert change.after["candidate"] == setup["candidate"].pk
    assert change.after["candidate_name"] == str(setup["candidate"])
    assert change.after["candidate_share"] == 0.1


def test_ab_split_is_even_and_a_change_that_changes_nothing_records_nothing(
    setup: dict[str, Any],
) -> None:
    """A/B sets the share to 0.5; repeating the same request is no change."""
    deployment = deployment_get_or_create(setup["campaign"])
    for _ in range(2):
        deployment_update(
            deployment=deployment,
            actor=setup["admin"],
            mode="ab",
            candidate=setup["candidate"].pk,
        )
    assert _state(deployment) == ("ab", setup["candidate"].pk, 0.5, 0.0)
    assert DeploymentChange.objects.filter(deployment=deployment).count() == 1


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mode": "canary", "candidate": "reward"}, "candidate: .* reward model"),
        ({"mode": "canary", "candidate": "champion"}, "candidate: .* champion already"),
        ({"mode": "canary", "candidate": None}, "candidate: .* needs a candidate"),
        ({"mode": "champion", "candidate": "candidate"}, "candidate: champion-only"),
        (
            {"mode": "canary", "candidate": "candidate", "candidate_share": 1.0},
            "candidate_share: .* strictly between 0 and 1",
        ),
        (
            {"mode": "canary", "candidate": "candidate", "candidate_share": 0.0},
            "candidate_share: .* strictly between 0 and 1",
        ),
        (
            {"mode": "ab", "candidate": "candidate", "candidate_share": 0.3},
            "candidate_share: an A/B split is always even",
        ),
        (
            {"mode": "canary", "candidate": "candidate", "sample_share": 1.5},
            "sample_share: must be between 0 and 1",
        ),
        ({"mode": "blue-green", "candidate": None}, "mode: 'blue-green' is not one"),
        (
            {"mode": "canary", "candidate": "candidate", "reason": "x" * 501},
            "reason: at most 500",
        ),
    ],
)
def test_refusals_name_the_field_and_change_nothing(
    setup: dict[str, Any], changes: dict[str, Any], match: str
) -> None:
    """Each invalid request is refused with its reason; the deployment and
    its history stay as they were."""
    deployment = deployment_get_or_create(setup["campaign"])
    before = _state(deployment)
    kwargs = dict(changes)
    name = kwargs.pop("candidate")
    with pytest.raises(DeploymentRefused, match=match):
        deployment_update(
            deployment=deployment,
            actor=setup["admin"],
            candidate=setup[name] if name else None,
            **kwargs,
        )
    assert _state(deployment) == before
    assert not DeploymentChange.objects.exists()


def test_a_switched_off_or_foreign_or_other_base_candidate_is_refused(
    setup: dict[str, Any],
) -> None:
    """Only a serving-enabled candidate of this campaign over its base."""
    deployment = deployment_get_or_create(setup["campaign"])
    adapter_serving_set(adapter=setup["candidate"], enabled=False, actor=None)
    with pytest.raises(DeploymentRefused, match="switched off for serving"):
        deployment_update(
            deployment=deployment,
            actor=None,
            mode="canary",
            candidate=setup["candidate"],
        )
    foreign = _register(CampaignFactory(), setup["base"])
    with pytest.raises(DeploymentRefused, match="another campaign"):
        deployment_update(
            deployment=deployment, actor=None, mode="ab", candidate=foreign
        )
    other_base = BaseModelVersion.objects.create(name="other", source="/m/o")
    stranger = _register(setup["campaign"], other_base)
    with pytest.raises(DeploymentRefused, match="campaign serves the base SmolLM2"):
        deployment_update(
            deployment=deployment, actor=None, mode="ab", candidate=stranger
        )
    with pytest.raises(DeploymentRefused, match="no adapter has the id"):
        deployment_update(deployment=deployment, actor=None, mode="ab", candidate=0)
    assert not DeploymentChange.objects.exists()


def test_rollback_undoes_the_last_change_and_again_the_one_before(
    setup: dict[str, Any],
) -> None:
    """Rollback is an undo stack: each restores the state before the newest
    change not yet undone, recorded as rolled_back; with nothing left to
    undo it is refused (409) and changes nothing."""
    deployment = deployment_get_or_create(setup["campaign"])
    admin = setup["admin"]
    deployment_update(
        deployment=deployment,
        actor=admin,
        mode="canary",
        candidate=setup["candidate"],
        candidate_share=0.1,
    )
    first = _state(deployment)
    deployment_update(
        deployment=deployment, actor=admin, mode="ab", candidate=setup["other"]
    )
    deployment_rollback(deployment=deployment, actor=admin, reason="v3 is worse")
    assert _state(deployment) == first
    rollback = DeploymentChange.objects.filter(deployment=deployment).first()
    assert rollback is not None
    assert rollback.action == DeploymentChange.Action.ROLLED_BACK
    assert rollback.actor == admin
    assert rollback.before["mode"] == "ab"
    assert rollback.after["mode"] == "canary"
    assert "v3 is worse" in rollback.reason and "undoes change #" in rollback.reason

    deployment_rollback(deployment=deployment, actor=admin)
    assert _state(deployment) == ("champion", None, 0.05, 0.0)
    with pytest.raises(Conflict, match="Nothing to roll back"):
        deployment_rollback(deployment=deployment, actor=admin)
    assert DeploymentChange.objects.filter(deployment=deployment).count() == 4


def test_rollback_to_a_candidate_that_may_no_longer_serve_is_refused(
    setup: dict[str, Any],
) -> None:
    """Rolling back to a canary whose candidate was switched off since
    changes nothing and says why."""
    deployment = deployment_get_or_create(setup["campaign"])
    deployment_update(
        deployment=deployment, actor=None, mode="ab", candidate=setup["candidate"]
    )
    deployment_update(
        deployment=deployment, actor=None, mode="ab", candidate=setup["other"]
    )
    adapter_serving_set(adapter=setup["candidate"], enabled=False, actor=None)
    with pytest.raises(Conflict, match="Cannot roll back to ab with .*switched off"):
        deployment_rollback(deployment=deployment, actor=None)
    assert _state(deployment)[:2] == ("ab", setup["other"].pk)


@pytest.mark.parametrize(
    "how", ["promote", "retire", "switch_off", "rollback", "refused"]
)
def test_the_candidate_leaving_ends_the_split_recorded(
    setup: dict[str, Any], how: str
) -> None:
    """Promoting, retiring, switching off the candidate, or an adapter
    rollback that makes it champion again, returns the deployment to
    champion-only, recorded as ended with the reason."""
    campaign, admin = setup["campaign"], setup["admin"]
    candidate = setup["candidate"]
    if how == "rollback":
        # v2 was champion before v1 replaced it: a rollback brings v2 back.
        adapter_promote(adapter=candidate, actor=None, override=True, reason="s")
        adapter_promote(
            adapter=setup["champion"], actor=None, override=True, reason="s"
        )
    deployment = deployment_get_or_create(campaign)
    deployment_update(
        deployment=deployment,
        actor=admin,
        mode="canary",
        candidate=candidate,
        candidate_share=0.2,
    )
    if how == "promote":
        adapter_promote(adapter=candidate, actor=admin, override=True, reason="won")
        words = "promoted to champion"
    elif how == "retire":
        adapter_retire(adapter=candidate, actor=admin)
        words = "retired"
    elif how == "switch_off":
        adapter_serving_set(
            adapter=candidate, enabled=False, actor=admin, reason="bad outputs"
        )
        words = "switched off for serving: bad outputs"
    elif how == "rollback":
        adapter_rollback(campaign=campaign, role="policy", actor=admin)
        words = "champion again by a rollback"
    else:
        # Its generation round failed the guardrails: retired automatically.
        generation_refuse(candidate, ["90% of its outputs are empty"])
        words = "refused: 90% of its outputs are empty"
    assert _state(deployment) == ("champion", None, 0.2, 0.0)
    ended = DeploymentChange.objects.filter(deployment=deployment).first()
    assert ended is not None
    assert ended.action == DeploymentChange.Action.ENDED
    assert ended.before["candidate"] == candidate.pk
    assert ended.after["mode"] == "champion"
    assert words in ended.reason
    assert ended.actor == (None if how == "refused" else admin)


def test_serving_switch_is_recorded_and_refuses_the_champion(
    setup: dict[str, Any],
) -> None:
    """Off and on again each leave an AdapterEvent; the same state twice
    records once; the champion cannot be switched off."""
    candidate, admin = setup["candidate"], setup["admin"]
    adapter_serving_set(adapter=candidate, enabled=False, actor=admin, reason="r")
    adapter_serving_set(adapter=candidate, enabled=False, actor=admin)
    adapter_serving_set(adapter=candidate, enabled=True, actor=admin)
    candidate.refresh_from_db()
    assert candidate.serving_enabled
    actions = list(
        AdapterEvent.objects.filter(
            adapter=candidate,
            action__in=[
                AdapterEvent.Action.SERVING_OFF,
                AdapterEvent.Action.SERVING_ON,
            ],
        )
        .order_by("created_at", "id")
        .values_list("action", "actor", "reason")
    )
    assert actions == [("serving_off", admin.pk, "r"), ("serving_on", admin.pk, "")]
    with pytest.raises(DeploymentRefused, match="is the champion: promote another"):
        adapter_serving_set(adapter=setup["champion"], enabled=False, actor=admin)
    setup["champion"].refresh_from_db()
    assert setup["champion"].serving_enabled


def _served(campaign: Any, adapter: Adapter | None, **fields: Any) -> ServedResponse:
    n = ServedResponse.objects.count()
    return ServedResponse.objects.create(
        public_id=f"chatcmpl-test{n}",
        endpoint=ServedResponse.Endpoint.CHAT,
        requested_model=f"campaign-{campaign.pk}/champion",
        served_model=adapter.served_name if adapter else "base-1",
        base_model=adapter.base_model if adapter else BaseModelVersion.objects.first(),
        adapter=adapter,
        campaign=campaign,
        prompt=[{"role": "user", "content": "hi"}],
        text="hello",
        finish_reason="stop",
        **fields,
    )


def test_feedback_counts_for_the_version_that_answered(
    setup: dict[str, Any],
) -> None:
    """A verdict is stored against the response, and the summary counts it
    for the version that gave it; unknown ids are 404, bad ratings 400."""
    campaign, admin = setup["campaign"], setup["admin"]
    champion_answer = _served(campaign, setup["champion"], arm="champion")
    candidate_answer = _served(campaign, setup["candidate"], arm="candidate")
    served_feedback_record(
        public_id=champion_answer.public_id, caller=admin, rating="up"
    )
    served_feedback_record(
        public_id=candidate_answer.public_id,
        caller=admin,
        rating="prefer_other",
        comment="the champion said it better",
    )
    served_feedback_record(
        public_id=candidate_answer.public_id, caller=None, rating="down"
    )
    feedback = ServedFeedback.objects.get(rating="prefer_other")
    assert feedback.response == candidate_answer
    assert feedback.caller == admin
    counts = {
        f.adapter_id: (f.up, f.down, f.prefer_other)
        for f in selectors.served_feedback_counts(campaign=campaign)
    }
    assert counts == {
        setup["champion"].pk: (1, 0, 0),
        setup["candidate"].pk: (0, 1, 1),
    }
    with pytest.raises(NotFound):
        served_feedback_record(public_id="chatcmpl-nope", caller=admin, rating="up")
    with pytest.raises(DeploymentRefused, match="rating: 'meh'"):
        served_feedback_record(
            public_id=champion_answer.public_id, caller=admin, rating="meh"
        )
    assert ServedFeedback.objects.count() == 3


def test_summary_counts_served_responses_per_arm_over_24h_and_7d(
    setup: dict[str, Any],
) -> None:
    """Per arm and version: the last day and the last week; older ones and
    other campaigns' responses are left out."""
    campaign = setup["campaign"]
    now = timezone.now()
    for age, arm, adapter in [
        (timedelta(hours=1), "champion", setup["champion"]),
        (timedelta(hours=2), "champion", setup["champion"]),
        (timedelta(days=3), "champion", setup["champion"]),
        (timedelta(days=9), "champion", setup["champion"]),
        (timedelta(hours=5), "candidate", setup["candidate"]),
    ]:
        row = _served(campaign, adapter, arm=arm)
        ServedResponse.objects.filter(pk=row.pk).update(created_at=now - age)
    _served(CampaignFactory(), setup["champion"], arm="champion")
    summary = selectors.deployment_summary(campaign=campaign, now=now)
    assert summary.deployment.pk is None  # reads never create the row
    assert summary.alias == f"campaign-{campaign.pk}/champion"
    assert summary.champion == setup["champion"]
    assert summary.rollback_target is None
    assert {(s.arm, s.adapter_id, s.last_24h, s.last_7d) for s in summary.served} == {
        ("champion", setup["champion"].pk, 2, 3),
        ("candidate", setup["candidate"].pk, 1, 1),
    }
    assert not Deployment.objects.exists()
