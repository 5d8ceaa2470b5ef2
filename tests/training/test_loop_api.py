"""``GET /api/v1/campaigns/<id>/loop/``: roles, the structure the loop
benchmark polls, 404 for an unknown campaign, and a read that writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign
from models_hub.models import BaseModelVersion
from models_hub.services.promotion import promotion_tick
from models_hub.services.registry import generation_settings_for
from tests.labeling.factories import CampaignFactory
from tests.training.test_loop import PASSED, labels, trained_round
from training.models import TrainingPolicy


@pytest.fixture
def world(make_user: Any, api_client_for: Any) -> dict[str, Any]:
    """A campaign whose first round was promoted over the base and whose
    second waits for comparisons; a client per role and an anonymous one.
    The campaign has no saved training policy (the defaults apply)."""
    campaign = CampaignFactory()
    generation_settings_for(campaign)
    base = BaseModelVersion.objects.create(name="api-base", source="/m")
    annotator = make_user(ANNOTATOR)
    first = trained_round(campaign, base, wall_seconds=60, tokens_per_second=99.5)
    labels(campaign, first, base, wins=22, losses=3, annotator=annotator)
    assert promotion_tick() == 1
    second = trained_round(campaign, base)
    return {
        "campaign": campaign,
        "base": base,
        "first": first,
        "second": second,
        "anonymous": api_client_for(None),
        **{
            role: api_client_for(make_user(role))
            for role in (ANNOTATOR, REVIEWER, ADMIN)
        },
    }


def _url(campaign: Campaign | int) -> str:
    pk = campaign if isinstance(campaign, int) else campaign.pk
    return reverse("api-campaign-loop", args=[pk])


@pytest.mark.django_db
def test_reviewers_and_admins_read_the_loop_annotators_and_visitors_are_refused(
    world: dict[str, Any],
) -> None:
    """Reviewer and admin: 200. Annotator: 403 with the missing role.
    Anonymous: 401."""
    url = _url(world["campaign"])
    assert world[REVIEWER].get(url).status_code == 200
    assert world[ADMIN].get(url).status_code == 200
    refused = world[ANNOTATOR].get(url)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "You need the reviewer role."}
    assert world["anonymous"].get(url).status_code == 401


@pytest.mark.django_db
def test_the_loop_api_gives_each_round_the_figures_the_benchmark_polls(
    world: dict[str, Any],
) -> None:
    """Per round: number, adapter id and name, labels in its snapshot,
    training wall seconds, tokens/s, guardrails, win rate vs the base (n,
    wins, rate, interval) and whether it was promoted; the champion and the
    waits-for sentence."""
    body = world[REVIEWER].get(_url(world["campaign"])).json()

    first, second = world["first"], world["second"]
    assert body["campaign"] == world["campaign"].pk
    one, two = body["rounds"]
    assert (one["number"], one["adapter_id"], one["adapter_name"]) == (
        1,
        first.pk,
        first.name,
    )
    assert one["labels_in_snapshot"] == 0 and two["labels_in_snapshot"] == 25
    assert one["training_wall_seconds"] == 60.0
    assert one["tokens_per_second"] == 99.5
    assert one["guardrails"] == PASSED
    assert one["promoted"] is True and two["promoted"] is False
    assert one["gate"]["decision"] == "promoted" and one["gate"]["n"] == 25
    vs_base = one["vs_base"]
    assert (vs_base["n"], vs_base["wins"], vs_base["losses"]) == (25, 22, 3)
    assert vs_base["rate"] == pytest.approx(22 / 25)
    assert vs_base["lower"] < vs_base["rate"] < vs_base["upper"]
    assert two["adapter_id"] == second.pk and two["gate"]["decision"] == "waiting"
    assert two["vs_base"]["rate"] is None and two["vs_base"]["n"] == 0
    assert two["vs_previous_champion"]["opponent"] == f"adapter:{first.pk}"
    assert body["champion"]["adapter_id"] == first.pk
    expected = (
        f"waiting for 20 more held-out comparisons of {second.name} vs the champion"
    )
    assert body["waits_for"] == body["waiting"]["sentence"] == expected
    assert body["waiting"]["state"] == "gate"
    assert body["next_round"] is None and body["active"] is False


@pytest.mark.django_db
def test_an_unknown_campaign_is_404(world: dict[str, Any]) -> None:
    response = world[REVIEWER].get(_url(world["campaign"].pk + 1000))
    assert response.status_code == 404
    assert response.json() == {"detail": "No such campaign."}


@pytest.mark.django_db
def test_reading_the_loop_writes_nothing(world: dict[str, Any]) -> None:
    """No statement writes and no table changes, though the campaign had no
    saved training policy."""
    before = {m._meta.label: m._default_manager.count() for m in apps.get_models()}
    with CaptureQueriesContext(connection) as queries:
        assert world[ADMIN].get(_url(world["campaign"])).status_code == 200
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []
    after = {m._meta.label: m._default_manager.count() for m in apps.get_models()}
    assert before == after
    assert not TrainingPolicy.objects.filter(campaign=world["campaign"]).exists()
