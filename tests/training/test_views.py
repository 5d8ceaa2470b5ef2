"""Training pages: list, launch form, job page with htmx polling, cancel."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.heartbeat import worker_words
from core.roles import ADMIN, ANNOTATOR, REVIEWER
from models_hub.models import BaseModelVersion
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory
from tests.training.conftest import labeled_campaign
from training import selectors
from training.models import DatasetSnapshot, TrainingJob, TrainingMetric


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.django_db
def test_annotators_cannot_see_training_pages(make_user: Any) -> None:
    client = _client(make_user(ANNOTATOR))
    for url in (reverse("training:job-list"), reverse("training:job-launch")):
        assert client.get(url).status_code == 403


@pytest.mark.django_db
def test_reviewer_sees_jobs_but_cannot_launch(make_user: Any) -> None:
    client = _client(make_user(REVIEWER))
    assert client.get(reverse("training:job-list")).status_code == 200
    assert client.get(reverse("training:job-launch")).status_code == 403


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
    assert 'hx-trigger="load delay:2s"' in fragment and "25%" not in fragment
    # The poll swaps the status card only: charts and the opened sections
    # (log, configuration) live outside it.
    assert "data-chart" not in fragment and "<details" not in fragment
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
    cancel = reverse("training:job-cancel", args=[job.pk])
    response = client.post(cancel, {"confirm": "yes"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    again = client.post(cancel, {"confirm": "yes"})
    assert again.status_code == 409


def make_job(**fields: Any) -> TrainingJob:
    """A job row without a launch (no tiny model, no snapshot files)."""
    campaign = CampaignFactory()
    base, _ = BaseModelVersion.objects.get_or_create(name="tiny", source="/m")
    snapshot = DatasetSnapshot.objects.create(
        campaign=campaign, content_hash="0" * 64, storage_path="snapshots/x"
    )
    return TrainingJob.objects.create(
        campaign=campaign, method="dpo", base_model=base, snapshot=snapshot, **fields
    )


def add_metrics(job: TrainingJob, rows: list[tuple[str, int, float]]) -> list[int]:
    return [
        TrainingMetric.objects.create(job=job, name=name, step=step, value=value).pk
        for name, step, value in rows
    ]


def _chart_specs(html: str) -> dict[str, dict[str, Any]]:
    specs = [
        json.loads(m)
        for m in re.findall(r'<script type="application/json">(.*?)</script>', html)
    ]
    return {spec["id"]: spec for spec in specs}


@pytest.mark.django_db
def test_job_page_groups_named_charts_with_axes_and_shows_config_as_json(
    make_user: Any,
) -> None:
    """Loss (train + eval), margins, accuracy and learning rate are named
    charts with axis titles and units; other keys sit under 'All metrics'; a
    one-point series is kept; the configuration is JSON, not a Python repr."""
    job = make_job(
        status="succeeded", config={"beta": 0.1, "peft": {"r": 8}, "seed": None}
    )
    ids = add_metrics(
        job,
        [
            ("loss", 0, 0.69),
            ("learning_rate", 0, 5e-4),
            ("grad_norm", 0, 3.0),
            ("loss", 2, 0.6),
            ("rewards/margins", 2, 0.2),
            ("loss", 1, 0.65),
            ("eval_loss", 2, 0.62),
            ("eval_rewards/accuracies", 2, float("nan")),
        ],
    )
    html = _client(make_user(REVIEWER)).get(
        reverse("training:job-detail", args=[job.pk])
    )
    page = html.content.decode()
    specs = _chart_specs(page)
    assert list(specs) == [
        "loss",
        "margin",
        "accuracy",
        "reward",
        "kl",
        "learning_rate",
        "metric:grad_norm",
    ]
    for spec in specs.values():
        assert spec["kind"] == "line" and spec["x"]["label"] == "step"
        assert spec["y"]["label"] and spec["title"]
    assert specs["loss"]["y"] == {"label": "loss", "unit": "nats"}
    loss = {s["key"]: s for s in specs["loss"]["series"]}
    assert loss["loss"]["label"] == "train" and loss["eval_loss"]["label"] == "eval"
    assert loss["loss"]["points"] == [[0, 0.69], [1, 0.65], [2, 0.6]]
    assert loss["eval_loss"]["points"] == [[2, 0.62]]
    accuracy = {s["key"]: s["points"] for s in specs["accuracy"]["series"]}
    assert accuracy["eval_rewards/accuracies"] == []  # NaN is not JSON
    assert specs["accuracy"]["y"]["max"] == 1
    # Charts without points are rendered hidden, so a live row can reveal them.
    hidden = set(re.findall(r'data-chart="([^"]+)" hidden', page))
    assert hidden == {"accuracy", "reward", "kl"}
    assert f'data-chart-after="{max(ids)}"' in page
    assert "data-chart-live" not in page  # a finished job does not poll
    assert "<svg" not in page and "<polyline" not in page
    config = json.dumps(job.config, indent=2, sort_keys=True)
    assert html.context["config_json"] == config
    assert '"seed": null' in page.replace("&quot;", '"') and "None" not in page


@pytest.mark.django_db
def test_metrics_feed_returns_only_rows_after_the_given_id(
    make_user: Any, django_assert_num_queries: Any
) -> None:
    """The poll gets rows with id > after (id order), the job's progress, and
    whether to keep polling, in a fixed number of queries."""
    job = make_job(status="running", progress_step=3, progress_total=12)
    ids = add_metrics(
        job,
        [("loss", 0, 1.0), ("loss", 1, 0.8), ("eval_loss", 1, 0.9), ("loss", 2, 0.5)],
    )
    add_metrics(make_job(), [("loss", 5, 9.0)])  # another job's row is never included
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-metrics", args=[job.pk])
    client.get(url, {"after": ids[3]})  # the page's first poll
    # Each later poll: the job and its new rows (the session and the user
    # come from Redis, the roles from the process's cache: core.auth).
    with django_assert_num_queries(2):
        feed = client.get(url, {"after": ids[1]}).json()
    assert feed["rows"] == [
        [ids[2], "eval_loss", 1, 0.9],
        [ids[3], "loss", 2, 0.5],
    ]
    assert feed["last_id"] == ids[3] and feed["more"] is False
    assert feed["active"] is True and feed["status"] == "running"
    assert feed["progress"] == {"step": 3, "total": 12, "percent": 25}
    empty = client.get(url, {"after": ids[3]}).json()
    assert empty["rows"] == [] and empty["last_id"] == ids[3]
    everything = client.get(url).json()
    assert [r[0] for r in everything["rows"]] == ids
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded")
    assert client.get(url, {"after": ids[3]}).json()["active"] is False
    assert client.get(url, {"after": "x"}).status_code == 400
    assert TrainingMetric.objects.filter(job=job).count() == 4  # reads only


@pytest.mark.django_db
def test_metrics_feed_pages_large_backlogs(
    make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the page size the feed says ``more`` and the next page continues."""
    monkeypatch.setattr(selectors, "METRIC_FEED_LIMIT", 2)
    job = make_job(status="running")
    ids = add_metrics(job, [("loss", step, 1.0 / (step + 1)) for step in range(3)])
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-metrics", args=[job.pk])
    first = client.get(url, {"after": 0}).json()
    assert [r[0] for r in first["rows"]] == ids[:2] and first["more"] is True
    second = client.get(url, {"after": first["last_id"]}).json()
    assert [r[0] for r in second["rows"]] == ids[2:] and second["more"] is False


@pytest.mark.django_db
def test_job_status_poll_refreshes_the_log_out_of_band(make_user: Any) -> None:
    """The status fragment carries the log tail for the Log section, which
    stays outside the swapped fragment."""
    job = make_job(status="running", log_tail="01:00:00 step 1: loss=0.7")
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-detail", args=[job.pk])
    page = client.get(url).content.decode()
    assert page.index('id="job-status"') < page.index('<pre id="job-log"')
    assert "data-chart-live" in page
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert '<pre id="job-log" class="log" hx-swap-oob="innerHTML">' in fragment
    assert "step 1: loss=0.7" in fragment


@pytest.mark.django_db
def test_job_page_says_the_phase_in_words_with_the_eta_in_minutes(
    make_user: Any,
) -> None:
    """A running job's page names its phase ("Loading the base model",
    "Training: step 12 of 28") and, while training, the time left in whole
    minutes, or in seconds under a minute; the poll fragment says the same."""
    now = timezone.now()
    job = make_job(status="running", phase="loading", heartbeat_at=now, started_at=now)
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-detail", args=[job.pk])
    loading = client.get(url).content.decode()
    assert "Loading the base model" in loading and "left" not in loading
    TrainingJob.objects.filter(pk=job.pk).update(
        phase="training", progress_step=12, progress_total=28, eta_seconds=200
    )
    training = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Training: step 12 of 28" in training
    assert "about 4 min left" in training
    TrainingJob.objects.filter(pk=job.pk).update(eta_seconds=40)
    assert "about 40 s left" in client.get(url).content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(phase="saving", eta_seconds=0)
    saving = client.get(url).content.decode()
    assert "Saving the adapter" in saving and "left" not in saving
    TrainingJob.objects.filter(pk=job.pk).update(
        status="failed", phase="evaluating", error="RuntimeError: out of memory"
    )
    failed = client.get(url).content.decode()
    assert "Failed while evaluating on the validation split" in failed


@pytest.mark.django_db
def test_job_list_shows_each_jobs_phase_eta_and_silent_workers(
    make_user: Any,
) -> None:
    now = timezone.now()
    make_job(
        status="running",
        phase="training",
        progress_step=3,
        progress_total=10,
        eta_seconds=30,
        heartbeat_at=now,
    )
    make_job(status="running", phase="converting", heartbeat_at=now)
    make_job(status="queued")
    page = _client(make_user(REVIEWER)).get(reverse("training:job-list"))
    html = page.content.decode()
    assert "Training: step 3 of 10" in html and "about 30 s left" in html
    assert "Converting the base model (first use only)" in html
    assert "Waiting for a GPU worker" in html
    assert "⚠ silent" not in html
    TrainingJob.objects.filter(phase="converting").update(
        heartbeat_at=now - timedelta(minutes=2)
    )
    assert (
        "⚠ silent"
        in _client(make_user(REVIEWER))
        .get(reverse("training:job-list"))
        .content.decode()
    )


@pytest.mark.django_db
def test_a_running_job_with_an_old_heartbeat_shows_a_warning(
    make_user: Any, settings: Any
) -> None:
    """Six missed heartbeats (30 s) warn that the worker may be gone, and
    say when the sweeper gives up on it; a fresh heartbeat or a finished
    job shows none."""
    settings.ARBITER_HEARTBEAT_TIMEOUT = 180
    now = timezone.now()
    job = make_job(status="running", phase="training", heartbeat_at=now, started_at=now)
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-detail", args=[job.pk])
    assert "No heartbeat from the worker" not in client.get(url).content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(
        heartbeat_at=now - timedelta(seconds=45)
    )
    stale = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'role="alert">No heartbeat from the worker for over 30 s' in stale
    assert "silent for 180 s, the sweeper marks the job failed" in stale
    TrainingJob.objects.filter(pk=job.pk).update(status="failed")
    assert "No heartbeat from the worker" not in client.get(url).content.decode()
    # A sweeper timeout shorter than six beats moves the warning with it.
    settings.ARBITER_HEARTBEAT_TIMEOUT = 20
    TrainingJob.objects.filter(pk=job.pk).update(
        status="running", heartbeat_at=now - timedelta(seconds=25)
    )
    assert "for over 20 s" in client.get(url).content.decode()


@pytest.mark.django_db
def test_cancel_asks_for_confirmation_with_and_without_javascript(
    make_user: Any,
) -> None:
    """The job page's cancel link carries ``hx-confirm`` for htmx and, as a
    plain link, opens a confirmation page; only a POST with ``confirm=yes``
    cancels. Afterwards the page says that no adapter was kept."""
    job = make_job(status="queued")
    admin = _client(make_user(ADMIN))
    url = reverse("training:job-detail", args=[job.pk])
    cancel = reverse("training:job-cancel", args=[job.pk])
    page = admin.get(url).content.decode()
    assert f'href="{cancel}" hx-post="{cancel}"' in page
    assert 'hx-confirm="Cancel job' in page and "onclick" not in page
    reviewer = _client(make_user(REVIEWER))
    assert cancel not in reviewer.get(url).content.decode()
    assert reviewer.get(cancel).status_code == 403
    assert reviewer.post(cancel, {"confirm": "yes"}).status_code == 403

    confirm = admin.get(cancel)
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Yes, cancel job" in html
    assert 'name="confirm" value="yes"' in html and "No adapter is kept" in html
    unconfirmed = admin.post(cancel)
    assert unconfirmed.status_code == 200 and "Yes, cancel job" in (
        unconfirmed.content.decode()
    )
    job.refresh_from_db()
    assert job.status == "queued" and not job.cancel_requested

    done = admin.post(cancel, {"confirm": "yes"}, follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled"
    after = done.content.decode()
    assert "cancelled before it started: no adapter was kept" in after
    assert "Cancelled: no adapter was kept." in after and cancel not in after
    assert "nothing to cancel" in admin.get(cancel).content.decode()


@pytest.mark.django_db
def test_an_htmx_cancel_of_a_running_job_returns_the_card_saying_it_stops(
    make_user: Any,
) -> None:
    now = timezone.now()
    job = make_job(
        status="running",
        phase="training",
        progress_step=2,
        progress_total=9,
        heartbeat_at=now,
        started_at=now,
    )
    admin = _client(make_user(ADMIN))
    cancel = reverse("training:job-cancel", args=[job.pk])
    card = admin.post(cancel, {"confirm": "yes"}, HTTP_HX_REQUEST="true")
    html = card.content.decode()
    assert html.lstrip().startswith('<section id="job-status"')
    assert "keeps no adapter" in html and cancel not in html
    job.refresh_from_db()
    assert job.status == "running" and job.cancel_requested
    TrainingJob.objects.filter(pk=job.pk).update(status="cancelled")
    stopped = admin.get(reverse("training:job-detail", args=[job.pk]))
    text = stopped.content.decode()
    assert "Cancelled while training (step 2 of 9)" in text
    assert "Cancelled: no adapter was kept." in text


@pytest.mark.django_db
def test_a_finished_job_shows_no_heartbeat_and_names_its_worker_in_words(
    make_user: Any,
) -> None:
    """A running job shows its heartbeat and "running on host (pid N)"; once
    it finished, the heartbeat line goes, the worker is where it ran and the
    final metrics are named in words."""
    now = timezone.now()
    job = make_job(
        status="running",
        phase="training",
        heartbeat_at=now,
        started_at=now,
        worker="gpu-box:19962",
    )
    client = _client(make_user(REVIEWER))
    url = reverse("training:job-detail", args=[job.pk])
    running = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert '<span class="heartbeat">heartbeat' in running
    assert "running on gpu-box (pid 19962)" in running
    assert "gpu-box:19962" not in running
    TrainingJob.objects.filter(pk=job.pk).update(
        status="succeeded",
        phase="done",
        final_metrics={"eval_loss": 0.5, "rewards/margins": 0.25, "train_runtime": 9},
    )
    done = client.get(url).content.decode()
    assert "heartbeat" not in done.lower()
    # Final metrics in words, not TRL keys.
    final = re.search(r'<p class="stats final-metrics">(.*?)</p>', done)
    assert final is not None
    assert re.sub(r"<[^>]+>", "", final.group(1)) == (
        "eval loss 0.5000train reward margins 0.2500train runtime 9.0000"
    )
    assert "ran on gpu-box (pid 19962)" in done and "gpu-box:19962" not in done
    assert worker_words("plain-name") == "plain-name"
