"""Charts: one partial (templates/partials/_chart.html) fed by core.charts
dicts; every page's chart carries its axes and data, and no page draws SVG
geometry computed in Python."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core import charts
from core.roles import REVIEWER
from labeling.models import Comparison, Completion, Preference
from models_hub.models import BaseModelVersion
from models_hub.selectors import campaign_leaderboard, leaderboard_chart
from models_hub.services.registry import adapter_register
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, ComparisonFactory, PromptFactory

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _specs(html: str) -> list[dict[str, Any]]:
    return [
        json.loads(m)
        for m in re.findall(r'<script type="application/json">(.*?)</script>', html)
    ]


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_partial_renders_a_canvas_and_its_data_without_inline_script() -> None:
    """The figure holds a labelled canvas and the chart as JSON data (no
    executable inline script, so a strict CSP allows it); markup in labels is
    escaped inside the JSON."""
    chart = charts.chart(
        id="demo",
        title="Loss",
        kind="line",
        x=charts.axis("step", "optimizer steps"),
        y=charts.axis("loss", "nats"),
        series=[
            charts.series(
                label="</script><b>train",
                key="loss",
                points=[(0, 1.0), (1, float("inf")), (2, 0.5)],
            )
        ],
    )
    html = render_to_string("partials/_chart.html", {"chart": chart})
    assert '<figure class="card chart" data-chart="demo">' in html
    assert 'aria-label="Loss: loss (nats) by step"' in html
    assert "<b>" not in html and "<script>" not in html
    [spec] = _specs(html)
    assert spec["x"] == {"label": "step", "unit": "optimizer steps"}
    assert spec["y"] == {"label": "loss", "unit": "nats"}
    assert spec["series"][0]["points"] == [[0, 1.0], [2, 0.5]]
    assert spec["series"][0]["label"] == "</script><b>train"
    hidden = render_to_string(
        "partials/_chart.html", {"chart": {**chart, "hidden": True}}
    )
    assert 'data-chart="demo" hidden>' in hidden


@pytest.mark.django_db
def test_leaderboard_chart_has_a_strength_axis_and_an_interval_per_version(
    make_user: Any,
) -> None:
    """Each version is a row with its strength and 95% interval; the x axis
    names the unit (log-odds against the base model)."""
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(name="base-model", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="a",
        metrics={},
    )
    annotator = make_user()
    for i in range(8):
        prompt = PromptFactory(campaign=campaign)
        a = Completion.objects.create(
            prompt=prompt,
            text=f"a{i}",
            content_hash=f"a{i}",
            origin="model",
            adapter=adapter,
            base_model=base,
            source_label="a",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"b{i}",
            content_hash=f"b{i}",
            origin="model",
            base_model=base,
            source_label="b",
        )
        comparison = Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
        Preference.objects.create(
            comparison=comparison,
            annotator=annotator,
            a_on_left=True,
            choice="a" if i < 6 else "b",
        )
    board = campaign_leaderboard(campaign=campaign, n_boot=50)
    html = render_to_string("partials/_chart.html", {"chart": leaderboard_chart(board)})
    [spec] = _specs(html)


@pytest.mark.django_db
def test_annotator_chart_counts_labels_per_day_with_empty_days_as_zero(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    annotator = make_user()
    comparisons = [ComparisonFactory(campaign=campaign) for _ in range(3)]
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    days = [noon - timedelta(days=d) for d in (6, 6, 4)]
    for comparison, day in zip(comparisons, days, strict=True):
        pref = Preference.objects.create(
            comparison=comparison, annotator=annotator, a_on_left=True, choice="a"
        )
        Preference.objects.filter(pk=pref.pk).update(created_at=day)
    response = _client(make_user(REVIEWER)).get(
        reverse("labeling:annotator-detail", args=[campaign.pk, annotator.pk])
    )
    html = response.content.decode()
    [spec] = _specs(html)
    assert spec["kind"] == "bar" and spec["y"]["label"] == "labels"
    assert spec["x"]["label"] == "day"
    assert spec["series"][0]["points"] == [
        [(noon - timedelta(days=6)).date().isoformat(), 2],
        [(noon - timedelta(days=5)).date().isoformat(), 0],
        [(noon - timedelta(days=4)).date().isoformat(), 1],
    ]
    assert "<svg" not in html


@pytest.mark.parametrize(
    "template",
    [
        "training/job_detail.html",
        "models_hub/leaderboard.html",
        "labeling/annotator.html",
    ],
)
def test_chart_pages_draw_through_the_partial_not_svg(template: str) -> None:
    """The pages that had SVG laid out in Python now include the partial."""
    source = (TEMPLATES / template).read_text()
    assert '{% include "partials/_chart.html"' in source
    assert "<svg" not in source and "<polyline" not in source
