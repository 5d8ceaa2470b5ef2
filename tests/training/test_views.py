"""Training pages: list, launch form, job page with htmx polling, cancel."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from tests.conftest import PASSWORD
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingMetric


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.django_db
def test_annotators_cannot_see_training_pages(make_user: Any) -> None:
    client = _client(make_user(ANNOTATOR))
    for url in (reverse("training:job-list"), reverse("training:job-launch")):
        assert client.get(url).status_code == 302


@pytest.mark.django_db
def test_reviewer_sees_jobs_but_cannot_launch(make_user: Any) -> None:
    client = _client(make_user(REVIEWER))
    assert client.get(reverse("training:job-list")).status_code == 200
    assert client.get(reverse("training:job-launch")).status_code == 302


@pytest.mark.django_db
def test_launch_form_creates_a_queued_job_and_shows_field_errors(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    client = _client(make_user(ADMIN))
    bad = client.post(
        reverse("training:job-launch"),
        {"campaign": campaign.pk, "method": "dpo", "config_json": '{"beta": -1}'},
    )
    assert bad.status_code == 400 and b"beta" in bad.content
    assert not TrainingJob.objects.exists()
    ok = client.post(
        reverse("training:job-launch"),
        {
            "campaign": campaign.pk,
            "method": "dpo",
            "learning_rate": "0.0005",
            "lora_r": "4",
        },
    )
    job = TrainingJob.objects.get()
    assert ok.status_code == 302 and ok["Location"] == reverse(
        "training:job-detail", args=[job.pk]
    )
    assert job.config["learning_rate"] == 0.0005 and job.config["peft"]["r"] == 4


@pytest.mark.django_db
def test_job_page_polls_only_while_the_job_is_active(
    make_user: Any, tiny_base: Any
) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    from training.services.jobs import training_job_launch

    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config={}
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running", progress_step=3, progress_total=12
    )
    for step, value in enumerate([1.0, 0.8, 0.5]):
        TrainingMetric.objects.create(job=job, step=step, name="loss", value=value)
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-detail", args=[job.pk])
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<section id="job-status"')
    assert (
        'hx-trigger="load delay:2s"' in fragment
        and "<polyline" in fragment
        and "25%" not in fragment
    )
    assert 'value="25"' in fragment
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded")
    done = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done


@pytest.mark.django_db
def test_admin_cancels_from_the_job_page(make_user: Any, tiny_base: Any) -> None:
    campaign = labeled_campaign(make_user, pairs=8)
    from training.services.jobs import training_job_launch

    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config={}
    )
    client = _client(make_user(ADMIN))
    response = client.post(reverse("training:job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    again = client.post(reverse("training:job-cancel", args=[job.pk]))
    assert again.status_code == 409
