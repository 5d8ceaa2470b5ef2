"""The deployment page and the serving switch on the Models page: what they
show, what the admin forms change, and who may post them."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from models_hub.models import (
    Adapter,
    AdapterEvent,
    Deployment,
    DeploymentChange,
    ServedFeedback,
    ServedResponse,
)
from models_hub.services.deployments import (
    deployment_get_or_create,
    deployment_update,
)
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    base_model_default,
)
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


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
def setup(db: None, make_user: Any) -> dict[str, Any]:
    campaign = CampaignFactory(name="Support bot")
    champion = _register(campaign)
    adapter_promote(adapter=champion, actor=None, override=True, reason="seed")
    return {
        "campaign": campaign,
        "champion": champion,
        "candidate": _register(campaign),
        "reward": _register(campaign, method="reward"),
        "admin": make_user("admin"),
        "reviewer": make_user("reviewer"),
        "annotator": make_user("annotator"),
        "url": reverse("models_hub:deployment", args=[campaign.pk]),
        "change_url": reverse("models_hub:deployment-update", args=[campaign.pk]),
        "rollback_url": reverse("models_hub:deployment-rollback", args=[campaign.pk]),
    }


def test_page_shows_the_deployment_counts_feedback_and_history(
    setup: dict[str, Any],
) -> None:
    """A reviewer sees the mode, champion, candidate with share, served
    counts per arm and feedback per version, and the change history; the
    admin form is not there for them."""
    campaign, candidate = setup["campaign"], setup["candidate"]
    deployment_update(
        deployment=deployment_get_or_create(campaign),
        actor=setup["admin"],
        mode="canary",
        candidate=candidate,
        candidate_share=0.1,
        reason="first canary",
    )
    served = ServedResponse.objects.create(
        public_id="chatcmpl-1",
        endpoint="chat",
        requested_model=f"campaign-{campaign.pk}/champion",
        served_model=candidate.served_name,
        base_model=candidate.base_model,
        adapter=candidate,
        campaign=campaign,
        arm="candidate",
        prompt="hi",
        finish_reason="stop",
    )
    ServedFeedback.objects.create(response=served, rating="down")
    response = _client(setup["reviewer"]).get(setup["url"])
    assert response.status_code == 200
    html = response.content.decode()
    assert f"campaign-{campaign.pk}/champion" in html
    assert "canary (candidate gets a share)" in html
    assert f"{candidate.name} v{candidate.version}" in html
    assert candidate.served_name in html
    assert "first canary" in html
    assert "Change the deployment" not in html
    assert 'data-testid="deployment-mode"' in html
    fragment = _client(setup["reviewer"]).get(setup["url"], HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    assert b'id="deployment-state"' in fragment.content
    assert b"<html" not in fragment.content


def test_admin_changes_the_deployment_and_rolls_it_back(
    setup: dict[str, Any],
) -> None:
    """The form records a change (share typed as a percentage); the
    one-click rollback restores champion-only and is recorded."""
    client = _client(setup["admin"])
    page = client.get(setup["url"]).content.decode()
    assert "Change the deployment" in page and "Nothing to roll back" in page
    response = client.post(
        setup["change_url"],
        {
            "mode": "canary",
            "candidate": setup["candidate"].pk,
            "candidate_share": "5%",
            "sample_share": "0.1",
            "reason": "ship it slowly",
        },
    )
    assert response.status_code == 302
    deployment = Deployment.objects.get(campaign=setup["campaign"])
    assert (deployment.mode, deployment.candidate_id) == (
        "canary",
        setup["candidate"].pk,
    )
    assert deployment.candidate_share == pytest.approx(0.05)
    assert deployment.sample_share == pytest.approx(0.1)
    assert "Roll back last change" in client.get(setup["url"]).content.decode()
    response = client.post(setup["rollback_url"], {"reason": "oops"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert (deployment.mode, deployment.candidate_id) == ("champion", None)
    assert list(
        DeploymentChange.objects.order_by("id").values_list("action", flat=True)
    ) == ["updated", "rolled_back"]
    response = client.post(setup["rollback_url"], follow=True)
    assert "Nothing to roll back" in response.content.decode()
    assert DeploymentChange.objects.count() == 2


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"mode": "canary", "candidate": "reward"}, "reward model"),
        (
            {"mode": "canary", "candidate": "candidate", "candidate_share": "1"},
            "strictly between 0 and 1",
        ),
        (
            {"mode": "canary", "candidate": "candidate", "candidate_share": "lots"},
            "is not a number",
        ),
        ({"mode": "ab", "candidate": ""}, "needs a candidate"),
    ],
)
def test_a_refused_change_shows_the_reason_and_changes_nothing(
    setup: dict[str, Any], form: dict[str, str], words: str
) -> None:
    if form.get("candidate") in ("reward", "candidate"):
        form = {**form, "candidate": str(setup[form["candidate"]].pk)}
    response = _client(setup["admin"]).post(setup["change_url"], form)
    assert response.status_code == 400
    assert words in response.content.decode()
    assert not DeploymentChange.objects.exists()
    assert not Deployment.objects.exclude(mode="champion").exists()


def test_only_admins_post_and_annotators_do_not_see_the_page(
    setup: dict[str, Any],
) -> None:
    form = {"mode": "ab", "candidate": setup["candidate"].pk}
    for user in (setup["reviewer"], setup["annotator"]):
        client = _client(user)
        assert client.post(setup["change_url"], form).status_code == 403
        assert client.post(setup["rollback_url"]).status_code == 403
        serving = reverse("models_hub:adapter-serving", args=[setup["candidate"].pk])
        assert client.post(serving, {"enabled": "0"}).status_code == 403
    assert _client(setup["annotator"]).get(setup["url"]).status_code == 403
    assert not Deployment.objects.exists()
    setup["candidate"].refresh_from_db()
    assert setup["candidate"].serving_enabled


def test_serving_switch_on_the_models_page(setup: dict[str, Any]) -> None:
    """The Models page offers the switch and links the deployment page;
    switching the champion off is refused with the reason."""
    client = _client(setup["admin"])
    listing = reverse("models_hub:adapter-list") + f"?campaign={setup['campaign'].pk}"
    html = client.get(listing).content.decode()
    assert "switch off for serving" in html
    assert setup["url"] in html
    candidate_url = reverse("models_hub:adapter-serving", args=[setup["candidate"].pk])
    response = client.post(
        candidate_url, {"enabled": "0", "reason": "noisy", "next": listing}
    )
    assert response.status_code == 302 and response["Location"] == listing
    setup["candidate"].refresh_from_db()
    assert not setup["candidate"].serving_enabled
    assert AdapterEvent.objects.filter(
        adapter=setup["candidate"], action="serving_off", reason="noisy"
    ).exists()
    assert "switch on for serving" in client.get(listing).content.decode()
    champion_url = reverse("models_hub:adapter-serving", args=[setup["champion"].pk])
    response = client.post(champion_url, {"enabled": "0"}, follow=True)
    assert "is the champion" in response.content.decode()
    setup["champion"].refresh_from_db()
    assert setup["champion"].serving_enabled
