"""Reads never write: every GET URL of the site, walked as admin and as
annotator over a populated database, leaves every table's row count as it
was and never answers 5xx. Reviewer pages answer 403 to an annotator and
send an anonymous visitor to the login page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign, Completion, Lease, Preference
from labeling.services.queue import comparison_lease_next
from models_hub.models import (
    Adapter,
    BaseModelVersion,
    CombineJob,
    DriftAlert,
    DriftPoint,
    GenerationJob,
)
from models_hub.services.generation import generation_job_launch
from models_hub.services.registry import adapter_promote, adapter_register
from tests.labeling.factories import PromptFactory, make_pairs
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob, TrainingMetric
from training.services.jobs import training_job_launch

# Django's own admin is not ours to walk; everything else is.
SKIP_PREFIXES = ("admin/",)
PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def _routes(
    patterns: list[URLPattern | URLResolver], prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, route)
        else:
            yield route, entry


def _fill(route: str, values: dict[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match["name"]
        assert name in values, f"{route}: add a value for <{name}> to the walk"
        return str(values[name])

    return "/" + PARAM.sub(sub, route).lstrip("^").rstrip("$")


@pytest.fixture
def world(make_user: Any, settings: Any, tmp_path: Any) -> dict[str, Any]:
    """A campaign with prompts, pairs, labels, a live lease, policy and reward
    adapters (one champion), completions of two versions on a golden prompt,
    a training job with metrics, a running generation round with a stale
    heartbeat and its guardrails."""
    settings.STORAGE_ROOT = str(tmp_path)
    admin = make_user(ADMIN)
    annotator = make_user(ANNOTATOR)
    campaign: Campaign = labeled_campaign(make_user, pairs=8)
    campaign.annotators.add(annotator)
    base = BaseModelVersion.objects.create(name="walk-base", source="/m")
    policy = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={"loss": 0.5},
    )
    reward = adapter_register(
        campaign=campaign,
        base_model=base,
        method="reward",
        peft_type="lora",
        storage_path="adapters/rm",
        metrics={},
    )
    adapter_promote(adapter=reward, actor=admin)
    golden = PromptFactory(campaign=campaign, is_golden=True, text="Golden?")
    for i, adapter in enumerate((policy, None)):
        Completion.objects.create(
            prompt=golden,
            text=f"golden answer {i}",
            content_hash=f"golden-{i}",
            origin="model",
            adapter=adapter,
            base_model=base,
            source_label="walk",
        )
    make_pairs(campaign, 3)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    job = training_job_launch(campaign=campaign, method="dpo", created_by=admin)
    TrainingMetric.objects.create(job=job, step=1, name="train/loss", value=0.7)
    generation_job = generation_job_launch(
        campaign=campaign, kind=GenerationJob.Kind.CANDIDATE, adapter=policy
    )
    figures = {"n": 2, "degenerate": 0.5, "length_mean": 10.0, "nll_under_base": None}
    GenerationJob.objects.filter(pk=generation_job.pk).update(
        status=GenerationJob.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(minutes=5),
        eta_seconds=90,
        guardrails={
            "candidate": figures,
            "opponent": figures,
            "violations": ["a reason"],
            "opponent_key": f"base:{base.pk}",
        },
    )
    combine_job = CombineJob.objects.create(
        campaign=campaign,
        base_model=base,
        method=CombineJob.Method.LINEAR,
        parents=[{"adapter_id": policy.pk, "weight": 1.0}],
        name="walk-combined",
    )
    drift_point = DriftPoint.objects.create(
        campaign=campaign,
        adapter=policy,
        base_model=base,
        source=DriftPoint.Source.GOLDEN,
        taken_at=timezone.now(),
        n=2,
        rm_mean=0.1,
        values={"scores": [0.0, 0.2], "lengths": [10.0, 12.0]},
    )
    drift_alert = DriftAlert.objects.create(
        campaign=campaign,
        adapter=policy,
        base_model=base,
        source=DriftPoint.Source.GOLDEN,
        metric=DriftAlert.Metric.RM_MEAN,
        value=-3.0,
        threshold=3.0,
        message="walk alert",
        point=drift_point,
        opened_at=timezone.now(),
        last_seen_at=timezone.now(),
    )
    preference = Preference.objects.filter(comparison__campaign=campaign).first()
    assert preference is not None
    # A live conversation of the annotator whose first turn waits for answers.
    from labeling.services.conversations import (
        conversation_message_send,
        conversation_settings_update,
        conversation_start,
    )

    conversation_settings_update(campaign=campaign, data={"live_enabled": True})
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    conversation_message_send(conversation=conversation, text="Hello")
    return {
        "admin": admin,
        "annotator": annotator,
        "values": {
            "campaign_id": campaign.pk,
            "lease_id": lease.pk,
            "adapter_id": policy.pk,
            "action": "promote",
            "comparison_id": preference.comparison_id,
            "preference_id": preference.pk,
            "annotator_id": preference.annotator_id,
            "job_id": job.pk,
            "generation_job_id": generation_job.pk,
            "method": "dpo",
            "user_id": annotator.pk,
            "combine_job_id": combine_job.pk,
            "public_id": "chatcmpl-walk",
            "alert_id": drift_alert.pk,
            "conversation_id": conversation.pk,
            "number": 1,
        },
        "versions": (f"adapter:{policy.pk}", f"base:{base.pk}"),
    }


def _urls(world: dict[str, Any]) -> list[str]:
    urls = [
        _fill(route, world["values"])
        for route, _ in _routes(get_resolver().url_patterns)
        if not route.startswith(SKIP_PREFIXES)
    ]
    campaign_id = world["values"]["campaign_id"]
    left, right = world["versions"]
    versions = f"?left={left}&right={right}"
    urls += [
        reverse("models_hub:compare", args=[campaign_id]) + versions,
        reverse("models_hub:blind-review", args=[campaign_id]) + versions,
        reverse("api-compare", args=[campaign_id]) + versions,
        reverse("models_hub:adapter-list") + f"?campaign={campaign_id}",
        reverse("api-adapter-list") + f"?campaign={campaign_id}",
        reverse("models_hub:generation-job-list") + f"?campaign={campaign_id}",
        reverse("api-generation-job-list") + f"?campaign={campaign_id}",
        reverse("training:job-launch") + f"?campaign={campaign_id}",
        reverse("api-served-response-list") + f"?campaign={campaign_id}",
    ]
    return urls


def _row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count() for model in apps.get_models()
    }


WRITE = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|TRUNCATE|WITH\b.*\b(INSERT|UPDATE|DELETE)\b)",
    re.I | re.S,
)


def _writes(sql: str) -> bool:
    # Sessions are the framework's bookkeeping (messages read on GET).
    return bool(WRITE.match(sql)) and '"django_session"' not in sql


def _get(client: Client, url: str) -> int:
    response = client.get(url)
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)  # streaming bodies run on read
    return response.status_code


@pytest.mark.django_db
@pytest.mark.parametrize("role", [ADMIN, ANNOTATOR])
def test_no_get_request_writes_a_row_or_fails(world: dict[str, Any], role: str) -> None:
    """Every GET URL, as ``role``: no table gains or loses a row, no
    statement writes (the session table aside), no 5xx."""
    client = Client()
    client.force_login(world["admin" if role == ADMIN else "annotator"])
    urls = _urls(world)
    assert len(urls) > 40
    before = _row_counts()
    writes: dict[str, list[str]] = {}
    statuses = {}
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            statuses[url] = _get(client, url)
        written = [q["sql"] for q in queries.captured_queries if _writes(q["sql"])]
        if written:
            writes[url] = written
    assert {u: s for u, s in statuses.items() if s >= 500} == {}
    after = _row_counts()
    assert {k: (before[k], after[k]) for k in before if before[k] != after[k]} == {}
    assert writes == {}
    if role == ADMIN:
        ok = [u for u, s in statuses.items() if s == 200]
        assert len(ok) > len(urls) // 2, statuses


@pytest.mark.django_db
def test_the_blind_review_page_shows_a_live_lease_on_get_without_leasing(
    world: dict[str, Any], make_user: Any
) -> None:
    """GET offers a start button; POST leases; a later GET shows that lease."""
    reviewer = make_user(REVIEWER)
    client = Client()
    client.force_login(reviewer)
    left, right = world["versions"]
    url = reverse("models_hub:blind-review", args=[world["values"]["campaign_id"]])
    url += f"?left={left}&right={right}"
    first = client.get(url)
    assert b"Start blind review" in first.content and first.context["pair"] is None
    assert not Lease.objects.filter(annotator=reviewer).exists()
    started = client.post(url)
    lease = Lease.objects.get(annotator=reviewer)
    assert started.context["pair"].lease_id == lease.pk
    again = client.get(url)
    assert again.context["pair"].lease_id == lease.pk
    assert Lease.objects.filter(annotator=reviewer).count() == 1


REVIEWER_PAGES = [
    ("models_hub:adapter-list", ()),
    ("models_hub:adapter-download", ("adapter_id",)),
    ("models_hub:leaderboard", ("campaign_id",)),
    ("models_hub:compare", ("campaign_id",)),
    ("models_hub:blind-review", ("campaign_id",)),
    ("labeling:campaign-quality", ("campaign_id",)),
    ("labeling:annotator-detail", ("campaign_id", "annotator_id")),
    ("labeling:campaign-labels", ("campaign_id",)),
    ("labeling:campaign-labels-export", ("campaign_id",)),
    ("labeling:comparison-detail", ("campaign_id", "comparison_id")),
    ("training:job-list", ()),
    ("training:job-detail", ("job_id",)),
    ("models_hub:generation-job-list", ()),
    ("models_hub:generation-job-detail", ("generation_job_id",)),
    ("labeling:campaign-detail", ("campaign_id",)),
    ("training:campaign-settings", ("campaign_id",)),
    ("training:campaign-loop", ("campaign_id",)),
    ("models_hub:deployment", ("campaign_id",)),
    ("models_hub:drift", ("campaign_id",)),
]
ADMIN_PAGES = [
    ("training:job-launch", ()),
    ("labeling:campaign-create", ()),
    ("labeling:campaign-edit", ("campaign_id",)),
    ("core:people", ()),
]


@pytest.mark.django_db
def test_an_annotator_gets_403_on_reviewer_pages_and_a_visitor_the_login_page(
    world: dict[str, Any], make_user: Any
) -> None:
    """Logged in without the role: 403 with a reason. Anonymous: login."""
    annotator, reviewer, anonymous = Client(), Client(), Client()
    annotator.force_login(world["annotator"])
    reviewer.force_login(make_user(REVIEWER))
    values = world["values"]
    pages = [
        (reverse(name, args=[values[a] for a in args]), name)
        for name, args in REVIEWER_PAGES
    ]
    for url, _ in pages:
        denied = annotator.get(url)
        assert denied.status_code == 403, url
        assert b"You need the reviewer role." in denied.content
        login = anonymous.get(url)
        assert login.status_code == 302, url
        assert login["Location"].startswith(reverse("login") + "?next=")
    for name, args in ADMIN_PAGES:
        url = reverse(name, args=[values[a] for a in args])
        assert reviewer.get(url).status_code == 403
        assert b"You need the admin role." in reviewer.get(url).content
    action = reverse("models_hub:adapter-action", args=[values["adapter_id"], "retire"])
    assert reviewer.post(action).status_code == 403
    assert Adapter.objects.get(pk=values["adapter_id"]).status == "candidate"
    assert TrainingJob.objects.count() == 1
