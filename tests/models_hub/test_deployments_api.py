"""The deployment API: reading and changing a campaign's deployment, its
rollback and changes, the serving switch, feedback on served responses and
their list. Every answer is checked with the database state behind it."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from models_hub.models import (
    Adapter,
    AdapterEvent,
    Deployment,
    DeploymentChange,
    ServedFeedback,
    ServedResponse,
)
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    base_model_default,
)
from tests.labeling.factories import CampaignFactory


def _register(campaign: Any, method: str = "dpo") -> Adapter:
    return adapter_register(
        campaign=campaign,
        base_model=base_model_default(),
        method=method,
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )


@pytest.fixture
def setup(db: None, make_user: Any, api_client_for: Any) -> dict[str, Any]:
    campaign = CampaignFactory()
    champion = _register(campaign)
    adapter_promote(adapter=champion, actor=None, override=True, reason="seed")
    admin = make_user("admin")
    return {
        "campaign": campaign,
        "champion": champion,
        "candidate": _register(campaign),
        "reward": _register(campaign, method="reward"),
        "admin": admin,
        "as_admin": api_client_for(admin),
        "as_reviewer": api_client_for(make_user("reviewer")),
        "as_annotator": api_client_for(make_user("annotator")),
        "url": f"/api/v1/campaigns/{campaign.pk}/deployment/",
    }


def _served(campaign: Any, adapter: Adapter, public_id: str) -> ServedResponse:
    return ServedResponse.objects.create(
        public_id=public_id,
        endpoint=ServedResponse.Endpoint.CHAT,
        requested_model=f"campaign-{campaign.pk}/champion",
        served_model=adapter.served_name,
        base_model=adapter.base_model,
        adapter=adapter,
        campaign=campaign,
        arm=ServedResponse.Arm.CANDIDATE,
        prompt=[{"role": "user", "content": "hi"}],
        text="hello",
        finish_reason="stop",
    )


def test_get_shows_champion_only_without_creating_the_row(
    setup: dict[str, Any],
) -> None:
    response = setup["as_reviewer"].get(setup["url"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["mode"] == "champion"
    assert body["model"] == f"campaign-{setup['campaign'].pk}/champion"
    assert body["champion"]["id"] == setup["champion"].pk
    assert body["champion"]["served_name"] == f"adapter-{setup['champion'].pk}"
    assert body["candidate"] is None
    assert body["can_roll_back"] is False
    assert not Deployment.objects.exists()


def test_admin_puts_a_canary_patches_it_and_rolls_back(
    setup: dict[str, Any],
) -> None:
    """PUT records the change; PATCH keeps the candidate and changes the
    share; rollback restores the canary before the PATCH; changes lists
    all three, newest first."""
    client, url = setup["as_admin"], setup["url"]
    response = client.put(
        url,
        {
            "mode": "canary",
            "candidate": setup["candidate"].pk,
            "candidate_share": 0.1,
            "reason": "try it",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["candidate"]["id"] == setup["candidate"].pk
    response = client.patch(url, {"candidate_share": 0.25}, format="json")
    assert response.status_code == 200, response.content
    deployment = Deployment.objects.get(campaign=setup["campaign"])
    assert (deployment.mode, deployment.candidate_id, deployment.candidate_share) == (
        "canary",
        setup["candidate"].pk,
        0.25,
    )
    response = client.post(f"{url}rollback/", {"reason": "too much"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["candidate_share"] == 0.1
    deployment.refresh_from_db()
    assert deployment.candidate_share == 0.1
    response = client.get(f"{url}changes/")
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 3
    assert [c["action"] for c in page["results"]] == [
        "rolled_back",
        "updated",
        "updated",
    ]
    assert page["results"][0]["actor"] == setup["admin"].username
    assert "too much" in page["results"][0]["reason"]
    assert client.get(f"{url}changes/?limit=1").json()["next"] is not None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"mode": "canary", "candidate": "reward"}, "detail", "reward model"),
        ({"mode": "ab", "candidate": "off"}, "detail", "switched off for serving"),
        (
            {"mode": "canary", "candidate": "candidate", "candidate_share": 1.5},
            "detail",
            "candidate_share: a canary needs a share strictly between 0 and 1",
        ),
        (
            {"mode": "canary", "candidate": "candidate", "sample_share": 2},
            "sample_share",
            "less than or equal to 1",
        ),
        ({"mode": "sometimes"}, "mode", "not a valid choice"),
    ],
)
def test_refusals_are_400_with_the_reason_and_change_nothing(
    setup: dict[str, Any], body: dict[str, Any], field: str, words: str
) -> None:
    off = _register(setup["campaign"])
    Adapter.objects.filter(pk=off.pk).update(serving_enabled=False)
    ids = {
        "reward": setup["reward"].pk,
        "off": off.pk,
        "candidate": setup["candidate"].pk,
    }
    if "candidate" in body:
        body = {**body, "candidate": ids[body["candidate"]]}
    response = setup["as_admin"].put(setup["url"], body, format="json")
    assert response.status_code == 400, response.content
    assert words in str(response.json()[field])
    assert not DeploymentChange.objects.exists()
    assert Deployment.objects.filter(mode="champion").count() <= 1
    assert not Deployment.objects.exclude(mode="champion").exists()


def test_rollback_with_nothing_to_undo_is_409(setup: dict[str, Any]) -> None:
    response = setup["as_admin"].post(f"{setup['url']}rollback/", {}, format="json")
    assert response.status_code == 409
    assert "Nothing to roll back" in response.json()["detail"]
    assert not DeploymentChange.objects.exists()


def test_only_admins_change_a_deployment(setup: dict[str, Any]) -> None:
    """Annotators may not read or change it; reviewers read but not change."""
    body = {"mode": "ab", "candidate": setup["candidate"].pk}
    for client, read in (
        (setup["as_annotator"], 403),
        (setup["as_reviewer"], 200),
    ):
        assert client.get(setup["url"]).status_code == read
        assert client.put(setup["url"], body, format="json").status_code == 403
        assert client.patch(setup["url"], body, format="json").status_code == 403
        assert client.post(f"{setup['url']}rollback/").status_code == 403
    response = setup["as_annotator"].post(
        f"/api/v1/models/adapters/{setup['candidate'].pk}/serving/",
        {"enabled": False},
        format="json",
    )
    assert response.status_code == 403
    assert not Deployment.objects.exists()
    setup["candidate"].refresh_from_db()
    assert setup["candidate"].serving_enabled


def test_serving_switch_refuses_the_champion_and_ends_a_canary(
    setup: dict[str, Any],
) -> None:
    client = setup["as_admin"]
    client.put(
        setup["url"], {"mode": "ab", "candidate": setup["candidate"].pk}, format="json"
    )
    response = client.post(
        f"/api/v1/models/adapters/{setup['champion'].pk}/serving/",
        {"enabled": False},
        format="json",
    )
    assert response.status_code == 400
    assert "is the champion" in response.json()["detail"]
    response = client.post(
        f"/api/v1/models/adapters/{setup['candidate'].pk}/serving/",
        {"enabled": False, "reason": "stop it"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["serving_enabled"] is False
    assert response.json()["served_name"] == setup["candidate"].served_name
    setup["candidate"].refresh_from_db()
    assert not setup["candidate"].serving_enabled
    assert AdapterEvent.objects.filter(
        adapter=setup["candidate"], action="serving_off", reason="stop it"
    ).exists()
    deployment = Deployment.objects.get(campaign=setup["campaign"])
    assert (deployment.mode, deployment.candidate_id) == ("champion", None)
    assert deployment.changes.first().action == "ended"
    assert (
        client.post(
            "/api/v1/models/adapters/999999/serving/", {"enabled": True}, format="json"
        ).status_code
        == 404
    )


def test_feedback_from_any_caller_is_recorded_against_the_version_once_per_caller(
    setup: dict[str, Any],
) -> None:
    served = _served(setup["campaign"], setup["candidate"], "chatcmpl-abc")
    url = "/api/v1/served-responses/chatcmpl-abc/feedback/"
    response = setup["as_annotator"].post(
        url, {"rating": "prefer_other", "comment": "meh"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["adapter"] == setup["candidate"].pk
    feedback = ServedFeedback.objects.get()
    assert (feedback.response, feedback.rating, feedback.comment) == (
        served,
        "prefer_other",
        "meh",
    )
    response = setup["as_annotator"].post(url, {"rating": "great"}, format="json")
    assert response.status_code == 400
    assert "rating" in response.json()
    response = setup["as_annotator"].post(
        "/api/v1/served-responses/chatcmpl-none/feedback/",
        {"rating": "up"},
        format="json",
    )
    assert response.status_code == 404
    assert APIClient().post(url, {"rating": "up"}, format="json").status_code == 401
    assert ServedFeedback.objects.count() == 1
    # One verdict per caller: a second replaces the first, another caller adds.
    response = setup["as_annotator"].post(url, {"rating": "down"}, format="json")
    assert response.status_code == 201
    assert ServedFeedback.objects.get().rating == "down"
    assert ServedFeedback.objects.get().comment == ""
    response = setup["as_annotator"].post(
        url, {"rating": "prefer_other", "comment": "meh"}, format="json"
    )
    assert response.status_code == 201
    assert ServedFeedback.objects.count() == 1
    summary = setup["as_reviewer"].get(setup["url"]).json()
    assert summary["feedback"] == [
        {
            "served_model": setup["candidate"].served_name,
            "adapter": setup["candidate"].pk,
            "label": f"{setup['candidate'].name} v{setup['candidate'].version}",
            "up": 0,
            "down": 0,
            "prefer_other": 1,
        }
    ]


def test_served_responses_list_filters_and_pages(setup: dict[str, Any]) -> None:
    for i in range(3):
        _served(setup["campaign"], setup["candidate"], f"chatcmpl-{i}")
    _served(CampaignFactory(), _register(CampaignFactory()), "chatcmpl-elsewhere")
    client = setup["as_reviewer"]
    page = client.get(
        f"/api/v1/served-responses/?campaign={setup['campaign'].pk}&limit=2"
    ).json()
    assert page["count"] == 3
    assert [r["id"] for r in page["results"]] == ["chatcmpl-2", "chatcmpl-1"]
    page = client.get(
        f"/api/v1/served-responses/?adapter={setup['candidate'].pk}"
    ).json()
    assert page["count"] == 3
    assert client.get("/api/v1/served-responses/").json()["count"] == 4
    assert client.get("/api/v1/served-responses/?campaign=x").status_code == 400
    assert client.get("/api/v1/served-responses/?adapter=999999").status_code == 404
    assert setup["as_annotator"].get("/api/v1/served-responses/").status_code == 403
