"""Cached reports: pages never fit or resample, labels refresh them (debounced)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core import reports, stats
from core.models import Report
from core.roles import ANNOTATOR, REVIEWER
from labeling.models import Campaign, Comparison, Completion, Preference
from labeling.selectors import quality as quality_selectors
from labeling.services.queue import comparison_lease_next, preference_record
from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from models_hub.services.reports import campaign_reports_refresh
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, PromptFactory


def _versions_with_pairs(n_pairs: int) -> dict[str, Any]:
    """A campaign with a base model and one adapter, and ``n_pairs`` open
    comparisons between their outputs (golden prompts, so the side-by-side
    page has rows)."""
    campaign = CampaignFactory(overlap_k=1)
    base = BaseModelVersion.objects.create(name="tiny", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="x",
        metrics={},
    )
    for i in range(n_pairs):
        prompt = PromptFactory(campaign=campaign, is_golden=True)
        a = Completion.objects.create(
            prompt=prompt,
            text=f"adapter says {i}",
            content_hash=f"a{i}",
            origin="model",
            adapter=adapter,
            base_model=base,
            source_label="adapter",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"base says {i}",
            content_hash=f"b{i}",
            origin="model",
            base_model=base,
            source_label="base",
        )
        Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
    return {
        "campaign": campaign,
        "adapter": f"adapter:{adapter.pk}",
        "base": f"base:{base.pk}",
    }


def _label(campaign: Campaign, annotator: Any, n: int) -> None:
    """``n`` labels through the queue; the adapter's output (completion a)
    wins three times in four."""
    for i in range(n):
        lease = comparison_lease_next(campaign=campaign, annotator=annotator)
        side = "left" if lease.a_on_left else "right"
        other = "right" if side == "left" else "left"
        preference_record(
            lease_id=lease.pk, annotator=annotator, choice=side if i % 4 else other
        )


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _page_urls(setup: dict[str, Any]) -> list[str]:
    pk = setup["campaign"].pk
    pair = {"left": setup["adapter"], "right": setup["base"]}
    query = f"?left={pair['left']}&right={pair['right']}"
    return [
        reverse("models_hub:leaderboard", args=[pk]),
        reverse("labeling:campaign-quality", args=[pk]),
        reverse("models_hub:compare", args=[pk]) + query,
        reverse("api-leaderboard", args=[pk]),
        reverse("api-campaign-quality", args=[pk]),
        reverse("api-compare", args=[pk]) + query,
    ]


@pytest.fixture
def count_statistics(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every Bradley-Terry fit (bootstrap_bradley_terry fits once per
    resample), every win-rate bootstrap and every pass over all labels for
    agreement and the annotator table."""
    calls: Counter[str] = Counter()

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(stats, "_fit", counting("bt_fit", stats._fit))
    monkeypatch.setattr(stats, "_win_rate", counting("bootstrap", stats._win_rate))
    for name in ("campaign_agreement", "annotator_report"):
        monkeypatch.setattr(
            quality_selectors,
            name,
            counting("quality", getattr(quality_selectors, name)),
        )
    return calls


@pytest.mark.django_db
def test_no_page_or_api_view_fits_or_resamples(
    make_user: Any, count_statistics: Counter[str]
) -> None:
    """Leaderboard, quality and side-by-side pages and their APIs read the
    cached report: before the first refresh ("computing…") and after it
    ("as of …"), they run no Bradley-Terry fit and no bootstrap."""
    setup = _versions_with_pairs(40)
    _label(setup["campaign"], make_user(ANNOTATOR), 40)
    reviewer = make_user(REVIEWER)
    page, api = _client(reviewer), APIClient()
    api.force_authenticate(reviewer)

    for url in _page_urls(setup):
        response = (api if "/api/" in url else page).get(url)
        assert response.status_code == 200, url
    assert "Computing…" in page.get(_page_urls(setup)[0]).content.decode()
    assert sum(count_statistics.values()) == 0

    assert campaign_reports_refresh(campaign_id=setup["campaign"].pk)
    assert count_statistics["bt_fit"] > 200 and count_statistics["bootstrap"] > 0
    count_statistics.clear()

    for url in _page_urls(setup):
        response = (api if "/api/" in url else page).get(url)
        assert response.status_code == 200, url
    assert sum(count_statistics.values()) == 0
    board = api.get(_page_urls(setup)[3]).json()
    assert board["report"]["status"] == "current"
    assert board["report"]["label_count"] == 40
    assert [v["key"] for v in board["versions"]] == [setup["adapter"], setup["base"]]
    assert board["win_rates"][setup["adapter"]][setup["base"]]["rate"] == 0.75
    assert "As of" in page.get(_page_urls(setup)[0]).content.decode()
    compare = api.get(_page_urls(setup)[5]).json()
    assert compare["win_rate"]["n"] == 40 and compare["win_rate"]["as_of"]


@pytest.mark.django_db
def test_labels_mark_reports_stale_and_queue_one_refresh(
    make_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """While a refresh is queued, more labels queue nothing; a refresh that
    started before a label stores its figures but stays stale."""
    setup = _versions_with_pairs(6)
    campaign_id = setup["campaign"].pk
    annotator = make_user(ANNOTATOR)
    with django_capture_on_commit_callbacks() as sent:
        _label(setup["campaign"], annotator, 1)
    assert sent == []  # nobody has asked for a report yet: no rows, no work

    with django_capture_on_commit_callbacks() as sent:
        report = reports.report_for_page(
            campaign_id=campaign_id, kind=Report.Kind.LEADERBOARD
        )
    assert report.computing and len(sent) == 1
    assert campaign_reports_refresh(campaign_id=campaign_id)
    assert not campaign_reports_refresh(campaign_id=campaign_id)  # duplicate
    assert Report.objects.filter(campaign_id=campaign_id, stale=False).count() == 2

    with django_capture_on_commit_callbacks() as sent:
        _label(setup["campaign"], annotator, 3)
    assert len(sent) == 1  # three labels, one refresh
    assert reports.reports_refresh_claim(campaign_id=campaign_id)
    _label(setup["campaign"], annotator, 1)  # arrives while computing
    reports.report_store(
        campaign_id=campaign_id,
        kind=Report.Kind.QUALITY,
        payload={},
        computed_at=timezone.now(),
        label_count=4,
        last_preference_id=None,
    )
    report = reports.report_get(campaign_id=campaign_id, kind=Report.Kind.QUALITY)
    assert report is not None and report.stale and report.status == "updating"


def _wait_for(predicate: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the reports refresh")
        time.sleep(0.25)


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_labels_refresh_the_leaderboard_through_the_worker(
    celery_workers: dict[str, Any], make_user: Any
) -> None:
    """Page view → "computing…" → the default-queue worker computes → "as of";
    more labels → "updating…" → the worker refreshes (debounced) → new figures."""
    setup = _versions_with_pairs(24)
    campaign = setup["campaign"]
    annotator = make_user(ANNOTATOR)
    _label(campaign, annotator, 8)
    page = _client(make_user(REVIEWER))
    url = reverse("models_hub:leaderboard", args=[campaign.pk])

    assert "Computing…" in page.get(url).content.decode()

    def computed(labels: int) -> Callable[[], bool]:
        return lambda: (
            Report.objects.filter(
                campaign=campaign,
                label_count=labels,
                stale=False,
                computed_at__isnull=False,
            ).count()
            == len(Report.Kind.values)
        )

    _wait_for(computed(8))
    html = page.get(url).content.decode()
    assert "As of" in html and "8 labels" in html and "updating…" not in html

    _label(campaign, annotator, 12)
    assert "updating…" in page.get(url).content.decode()
    _wait_for(computed(20))
    html = page.get(url).content.decode()
    assert "20 labels" in html and "updating…" not in html
    board = Report.objects.get(campaign=campaign, kind=Report.Kind.LEADERBOARD)
    assert board.payload["labels"] == 20
    assert board.last_preference_id == max(
        Preference.objects.filter(comparison__campaign=campaign).values_list(
            "id", flat=True
        )
    )


@pytest.mark.django_db
def test_a_page_resends_a_refresh_that_looks_lost(
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A stale report nobody touched for REQUEST_RETRY_AFTER (its message was
    lost) gets a new refresh from the next page view, once per guard period;
    a fresh stale one (refresh on its way) does not."""
    setup = _versions_with_pairs(2)
    campaign_id = setup["campaign"].pk
    assert campaign_reports_refresh(campaign_id=campaign_id)
    Report.objects.filter(campaign_id=campaign_id).update(stale=True)
    with django_capture_on_commit_callbacks() as sent:
        reports.report_for_page(campaign_id=campaign_id, kind=Report.Kind.QUALITY)
    assert sent == []
    Report.objects.filter(campaign_id=campaign_id).update(
        updated_at=timezone.now() - reports.REQUEST_RETRY_AFTER * 2
    )
    with django_capture_on_commit_callbacks() as sent:
        for _ in range(3):
            report = reports.report_for_page(
                campaign_id=campaign_id, kind=Report.Kind.QUALITY
            )
    assert len(sent) == 1 and report.status == "updating"
