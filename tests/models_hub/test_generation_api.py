"""The generation job API: roles, the job list and detail, cancel, and
starting a bootstrap round. No worker runs here: launching writes the QUEUED
record, and the task is sent only after a commit these tests never make."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign
from models_hub.models import GenerationJob
from models_hub.services.generation import generation_job_launch
from tests.labeling.factories import CampaignFactory, PromptFactory, make_pairs


def _set(job: GenerationJob, **fields: Any) -> GenerationJob:
    """Move a job the way its worker would (no worker runs in these tests)."""
    GenerationJob.objects.filter(pk=job.pk).update(**fields)
    job.refresh_from_db()
    return job


@pytest.fixture
def setup(make_user: Any, api_client_for: Any) -> dict[str, Any]:
    """A campaign with two prompts that have no open pair, and one whose
    every prompt already has one; a client per role and an anonymous one."""
    waiting = CampaignFactory()
    PromptFactory.create_batch(2, campaign=waiting)
    paired = CampaignFactory()
    make_pairs(paired, 2)
    return {
        "waiting": waiting,
        "paired": paired,
        "anonymous": api_client_for(None),
        **{
            role: api_client_for(make_user(role))
            for role in (ANNOTATOR, REVIEWER, ADMIN)
        },
    }


def _bootstrap(campaign: Campaign) -> str:
    return reverse("api-campaign-bootstrap", args=[campaign.pk])


@pytest.mark.django_db
def test_annotators_are_refused_reviewers_read_and_admins_launch_and_cancel(
    setup: dict[str, Any],
) -> None:
    """Annotator: 403 everywhere. Reviewer: reads, 403 on launch and cancel
    with nothing written. Anonymous: 401. Admin: launches and cancels."""
    job = generation_job_launch(
        campaign=setup["paired"], kind=GenerationJob.Kind.BOOTSTRAP
    )
    listing = reverse("api-generation-job-list")
    detail = reverse("api-generation-job-detail", args=[job.pk])
    cancel = reverse("api-generation-job-cancel", args=[job.pk])
    bootstrap = _bootstrap(setup["waiting"])
    for url in (listing, detail):
        assert setup[ANNOTATOR].get(url).status_code == 403
        assert setup["anonymous"].get(url).status_code == 401
        assert setup[REVIEWER].get(url).status_code == 200
    for url in (cancel, bootstrap):
        for who in (ANNOTATOR, REVIEWER):
            refused = setup[who].post(url)
            assert refused.status_code == 403
            assert refused.json()["detail"] == "You need the admin role."
        assert setup["anonymous"].post(url).status_code == 401
    assert GenerationJob.objects.count() == 1
    assert GenerationJob.objects.get().status == GenerationJob.Status.QUEUED

    assert setup[ADMIN].post(bootstrap).status_code == 201
    cancelled = setup[ADMIN].post(cancel)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert GenerationJob.objects.get(pk=job.pk).status == GenerationJob.Status.CANCELLED
    assert GenerationJob.objects.count() == 2


@pytest.mark.django_db
def test_bootstrap_queues_a_job_record_for_the_gpu_worker(
    setup: dict[str, Any], admin_user: Any, api_client_for: Any
) -> None:
    """201 with the job; the database holds one QUEUED bootstrap job for the
    campaign, by that admin, writing with the champion (no adapter named)."""
    response = api_client_for(admin_user).post(_bootstrap(setup["waiting"]))
    assert response.status_code == 201
    body = response.json()
    job = GenerationJob.objects.get()
    assert body["id"] == job.pk and body["status"] == "queued"
    assert body["kind"] == "bootstrap" and body["heartbeat_stale"] is False
    assert job.campaign == setup["waiting"]
    assert job.kind == GenerationJob.Kind.BOOTSTRAP
    assert job.status == GenerationJob.Status.QUEUED
    assert job.adapter is None and job.created_by == admin_user


@pytest.mark.django_db
def test_a_bootstrap_while_one_is_queued_or_running_is_409(
    setup: dict[str, Any],
) -> None:
    """A second round of the same campaign is refused with the active job's
    number while the first is queued and while it runs; another campaign's
    round is not in the way."""
    url = _bootstrap(setup["waiting"])
    first = setup[ADMIN].post(url).json()
    queued = setup[ADMIN].post(url)
    assert queued.status_code == 409
    assert f"already queued (job #{first['id']})" in queued.json()["detail"]
    _set(GenerationJob.objects.get(pk=first["id"]), status="running")
    running = setup[ADMIN].post(url)
    assert running.status_code == 409 and "already running" in running.json()["detail"]
    assert GenerationJob.objects.count() == 1


@pytest.mark.django_db
def test_a_bootstrap_with_no_prompt_waiting_for_a_pair_is_400(
    setup: dict[str, Any],
) -> None:
    """Every prompt has an open pair, or there are no prompts: 400 with the
    reason, and no job."""
    for campaign in (setup["paired"], CampaignFactory()):
        response = setup[ADMIN].post(_bootstrap(campaign))
        assert response.status_code == 400
        assert "already has an open pair" in response.json()["detail"]
    assert not GenerationJob.objects.exists()


@pytest.mark.django_db
def test_a_bootstrap_for_a_campaign_that_does_not_exist_is_refused(
    setup: dict[str, Any],
) -> None:
    missing = setup[ADMIN].post(
        reverse("api-campaign-bootstrap", args=[Campaign.objects.count() + 999])
    )
    assert missing.status_code == 403 and "does not exist" in missing.json()["detail"]
    assert not GenerationJob.objects.exists()


@pytest.mark.django_db
def test_cancel_stops_a_running_job_and_refuses_a_finished_one_with_409(
    setup: dict[str, Any],
) -> None:
    """Running: 202 and ``cancel_requested`` (the worker stops between
    batches). Finished: 409 naming how it ended, and the row is unchanged."""
    job = generation_job_launch(
        campaign=setup["waiting"], kind=GenerationJob.Kind.BOOTSTRAP
    )
    _set(job, status="running", heartbeat_at=timezone.now())
    url = reverse("api-generation-job-cancel", args=[job.pk])
    running = setup[ADMIN].post(url)
    assert running.status_code == 202
    assert running.json()["cancel_requested"] is True
    job.refresh_from_db()
    assert job.status == "running" and job.cancel_requested
    for final in ("succeeded", "failed", "cancelled"):
        _set(job, status=final, cancel_requested=False)
        refused = setup[ADMIN].post(url)
        assert refused.status_code == 409
        assert refused.json() == {"detail": f"This job has already {final}."}
        job.refresh_from_db()
        assert job.status == final and not job.cancel_requested
    missing = setup[ADMIN].post(
        reverse("api-generation-job-cancel", args=[job.pk + 1000])
    )
    assert missing.status_code == 404


@pytest.mark.django_db
def test_the_list_filters_by_campaign_and_a_malformed_filter_is_400(
    setup: dict[str, Any],
) -> None:
    """``?campaign=`` keeps that campaign's jobs; a non-integer or
    non-positive id is a 400 with the field's error, an unknown one a 403."""
    mine = generation_job_launch(
        campaign=setup["waiting"], kind=GenerationJob.Kind.BOOTSTRAP
    )
    other = generation_job_launch(
        campaign=setup["paired"], kind=GenerationJob.Kind.BOOTSTRAP
    )
    url = reverse("api-generation-job-list")
    client = setup[REVIEWER]
    everything = [row["id"] for row in client.get(url).json()]
    assert everything == [other.pk, mine.pk]
    filtered = client.get(url, {"campaign": setup["waiting"].pk}).json()
    assert [row["id"] for row in filtered] == [mine.pk]
    for bad in ("abc", "0", "-3", "9" * 30):
        response = client.get(url, {"campaign": bad})
        assert response.status_code == 400, bad
        assert "campaign" in response.json()
    unknown = client.get(url, {"campaign": setup["paired"].pk + 1000})
    assert unknown.status_code == 403


@pytest.mark.django_db
def test_the_detail_reports_progress_and_a_stale_heartbeat(
    setup: dict[str, Any],
) -> None:
    """A running job whose heartbeat is 31 s old is flagged stale; a fresh
    one is not; an unknown id is a 404."""
    job = generation_job_launch(
        campaign=setup["waiting"], kind=GenerationJob.Kind.BOOTSTRAP
    )
    url = reverse("api-generation-job-detail", args=[job.pk])
    now = timezone.now()
    _set(
        job,
        status="running",
        heartbeat_at=now,
        prompts_done=3,
        prompts_total=8,
        tokens_per_second=41.5,
        eta_seconds=90,
    )
    body = setup[REVIEWER].get(url).json()
    assert body["heartbeat_stale"] is False
    assert (body["prompts_done"], body["prompts_total"]) == (3, 8)
    assert body["tokens_per_second"] == 41.5 and body["eta_seconds"] == 90
    _set(job, heartbeat_at=now - timedelta(seconds=31))
    assert setup[REVIEWER].get(url).json()["heartbeat_stale"] is True
    missing = setup[REVIEWER].get(
        reverse("api-generation-job-detail", args=[job.pk + 1000])
    )
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No such generation job."}
