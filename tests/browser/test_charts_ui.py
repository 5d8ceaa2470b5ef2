"""static/js/charts.js in real Chromium for the chart kinds the job page does
not use: labels per day (bars) and leaderboard strengths (intervals), swapped
in by htmx the way fragments arrive."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.template.loader import render_to_string

from labeling.selectors.quality import annotator_daily_chart
from models_hub.selectors import leaderboard_chart
from tests.browser.conftest import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

CHART = """(id) => {
  const canvas = document.querySelector(`figure[data-chart="${id}"] canvas`);
  const chart = Chart.getChart(canvas);
  if (!chart) return null;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return {
    painted: painted,
    x: chart.options.scales.x.title.text,
    y: chart.options.scales.y.title.text,
    labels: chart.data.labels,
    height: canvas.getBoundingClientRect().height,
  };
}"""


def test_bar_and_interval_charts_draw_with_axes_after_an_htmx_swap(page: Any) -> None:
    bars = annotator_daily_chart(
        timeline=[
            {"day": date(2026, 12, 1), "labels": 4},
            {"day": date(2026, 12, 3), "labels": 9},
        ]
    )
    board = {
        "anchor": "base:1",
        "rows": [
            {"label": "dpo-v2 (champion)", "strength": 0.8, "lower": 0.5, "upper": 1.1},
            {"label": "dpo-v1 (retired)", "strength": 0.3, "lower": 0.0, "upper": 0.6},
            {"label": "base (base, v0)", "strength": 0.0, "lower": 0.0, "upper": 0.0},
        ],
    }
    html = render_to_string("partials/_chart.html", {"chart": bars})
    html += render_to_string(
        "partials/_chart.html", {"chart": leaderboard_chart(board)}
    )

    page.goto("/accounts/login/")
    page.wait_for_function("() => window.htmx && window.Chart")
    page.evaluate(
        "(html) => htmx.swap(document.querySelector('main'), html,"
        " {swapStyle: 'beforeend'})",
        html,
    )
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('figure[data-chart] canvas'))"
        ".every((c) => Chart.getChart(c))"
    )

    day = page.evaluate(CHART, "labels-per-day")
    assert day["painted"] > 500
    assert day["x"] == "day (UTC)" and day["y"] == "labels (per day)"
    assert day["labels"] == ["2026-12-01", "2026-12-02", "2026-12-03"]

    strength = page.evaluate(CHART, "leaderboard")
    assert strength["painted"] > 500
    assert strength["x"] == "Bradley–Terry strength (log-odds, base model = 0)"
    assert strength["labels"][0] == "dpo-v2 (champion)"
    assert strength["height"] > 3 * 30  # a row per version, not squashed

    # Hovering the champion's row shows its value and its interval.
    canvas = page.locator('figure[data-chart="leaderboard"] canvas')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    point = page.evaluate(
        "() => Chart.getChart(document.querySelector("
        "'figure[data-chart=\"leaderboard\"] canvas')).getDatasetMeta(0).data[0]"
        ".getProps(['x', 'y'])"
    )
    page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
    tooltip = page.evaluate(
        "() => Chart.getChart(document.querySelector("
        "'figure[data-chart=\"leaderboard\"] canvas')).tooltip.body"
        ".map((b) => b.lines.join(' ')).join(' | ')"
    )
    assert "strength: 0.8 log-odds" in tooltip and "0.5 … 1.1" in tooltip
    assert page.js_errors == []
