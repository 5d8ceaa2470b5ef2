"""The loop page ``/training/campaigns/<id>/loop/``: roles, the timeline with
links to each job, the win-rate chart, the waits-for sentence, and the htmx
status fragment that polls only while a job runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign
from models_hub.models import BaseModelVersion, GenerationJob
from models_hub.services.promotion import promotion_tick
from models_hub.services.registry import generation_settings_for
from tests.labeling.factories import CampaignFactory
from tests.training.test_loop import labels, trained_round
from training.models import TrainingJob, TrainingPolicy

POLL = 'hx-trigger="load delay:5s"'


@pytest.fixture
def world(make_user: Any) -> dict[str, Any]:
    """A campaign whose first round was promoted over the base, and whose
    second round's candidate generation job has finished."""
    campaign = CampaignFactory()
    generation_settings_for(campaign)
    TrainingPolicy.objects.create(campaign=campaign)
    base = BaseModelVersion.objects.create(name="page-base", source="/m")
    first = trained_round(campaign, base)
    labels(campaign, first, base, wins=22, losses=3, annotator=make_user())
    assert promotion_tick() == 1
    second = trained_round(campaign, base)
    return {"campaign": campaign, "first": first, "second": second}


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(campaign: Campaign | int) -> str:
    pk = campaign if isinstance(campaign, int) else campaign.pk
    return reverse("training:campaign-loop", args=[pk])


@pytest.mark.django_db
def test_reviewers_and_admins_see_the_page_annotators_get_403_visitors_log_in(
    world: dict[str, Any], make_user: Any
) -> None:
    url = _url(world["campaign"])
    assert _client(make_user(REVIEWER)).get(url).status_code == 200
    assert _client(make_user(ADMIN)).get(url).status_code == 200
    assert _client(make_user(ANNOTATOR)).get(url).status_code == 403
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_the_page_shows_rounds_with_links_the_chart_and_what_the_loop_waits_for(
    world: dict[str, Any], make_user: Any
) -> None:
    """Each round links its training job and generation job; the champion
    and the sentence are shown; the chart has a point per round with labels
    against the base. Nothing runs, so the page does not poll."""
    response = _client(make_user(REVIEWER)).get(_url(world["campaign"]))

    html = response.content.decode()
    first, second = world["first"], world["second"]
    for adapter in (first, second):
        job = TrainingJob.objects.get(adapter=adapter)
        generation = GenerationJob.objects.get(adapter=adapter)
        assert reverse("training:job-detail", args=[job.pk]) in html
        assert reverse("models_hub:generation-job-detail", args=[generation.pk]) in html
    assert (
        f"Waiting for 20 more held-out comparisons of {second.name} vs the champion."
        in html
    )
    assert "champion <strong><a" in html and first.name in html
    assert 'id="round-1"' in html and 'id="round-2"' in html
    assert 'data-chart="loop-win-rate"' in html
    chart = response.context["loop"].chart
    assert json.dumps(chart["title"]) in html
    assert chart["id"] == "loop-win-rate"
    assert chart["series"][0]["points"] == [[1, pytest.approx(22 / 25)]]
    assert POLL not in html
    assert response.context["loop"].rounds[0].promoted


@pytest.mark.django_db
def test_the_status_fragment_polls_while_a_job_runs_and_stops_after(
    world: dict[str, Any], make_user: Any
) -> None:
    """An htmx request gets only the status fragment; it carries the poll
    while the training job runs and drops it once the job has finished."""
    client = _client(make_user(REVIEWER))
    job = TrainingJob.objects.get(adapter=world["second"])
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING,
        progress_step=12,
        progress_total=28,
        finished_at=None,
    )
    page = client.get(_url(world["campaign"])).content.decode()
    assert POLL in page and "<h1>" in page

    fragment = client.get(_url(world["campaign"]), headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert html.lstrip().startswith('<section id="loop-status"')
    assert "<h1>" not in html and POLL in html
    assert f"Training step 12 of 28 (DPO job {job.pk})." in html

    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.SUCCEEDED, finished_at=timezone.now()
    )
    done = client.get(_url(world["campaign"]), headers={"HX-Request": "true"})
    assert POLL not in done.content.decode()


@pytest.mark.django_db
def test_an_unknown_campaign_is_a_404_page(make_user: Any) -> None:
    response = _client(make_user(REVIEWER)).get(_url(999_999))
    assert response.status_code == 404
    assert b"No such campaign." in response.content
