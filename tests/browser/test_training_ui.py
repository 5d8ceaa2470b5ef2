"""The training job page in real Chromium: Chart.js charts with axes and
hover values, live rows from the metrics feed, and sections that stay open
while the page polls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.roles import REVIEWER
from tests.browser.conftest import CHROMIUM
from tests.browser.test_labeling_ui import login_with_cookie
from tests.training.test_views import add_metrics, make_job
from training.models import TrainingJob

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# The pixel under a dataset's first point, and that point's hover text.
POINT = """([chartId, datasetIndex]) => {
  const canvas = document.querySelector(`figure[data-chart="${chartId}"] canvas`);
  const chart = Chart.getChart(canvas);
  const point = chart.getDatasetMeta(datasetIndex).data[0];
  const ratio = chart.currentDevicePixelRatio;
  const pixel = canvas.getContext("2d").getImageData(
    Math.round(point.x * ratio), Math.round(point.y * ratio), 1, 1).data;
  const box = canvas.getBoundingClientRect();
  return {pixel: Array.from(pixel), radius: point.options.radius,
          pageX: box.left + point.x, pageY: box.top + point.y};
}"""

PAINTED = """(chartId) => {
  const canvas = document.querySelector(`figure[data-chart="${chartId}"] canvas`);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  return painted;
}"""

LENGTHS = """(chartId) => Chart.getChart(
  document.querySelector(`figure[data-chart="${chartId}"] canvas`)
).data.datasets.map((d) => d.data.length)"""


def wait_for_polls(page: Any, kind: str, count: int) -> None:
    """Let the page handle ``count`` more answers of its ``kind`` poll
    (counted in the page: Playwright's response events may come late)."""
    start = page.evaluate(f"window.polls.{kind}")
    # A function, not an expression: Playwright evals expressions in the page,
    # which the Content-Security-Policy (no 'unsafe-eval') refuses.
    page.wait_for_function(
        f"() => window.polls.{kind} >= {start + count}", timeout=15_000
    )


def test_job_page_draws_charts_and_keeps_sections_open_while_polling(
    page: Any, live_server: Any, make_user: Any
) -> None:
    job = make_job(
        status="running",
        progress_step=3,
        progress_total=10,
        log_tail="01:00:00 step 2: loss=0.6",
        config={"beta": 0.1, "learning_rate": 0.0005, "peft": {"r": 8}},
    )
    add_metrics(
        job,
        [
            ("loss", 0, 0.69),
            ("learning_rate", 0, 5e-4),
            ("grad_norm", 0, 2.5),
            ("loss", 1, 0.65),
            ("learning_rate", 1, 4e-4),
            ("rewards/margins", 1, 0.05),
            ("eval_loss", 1, 0.9),  # one point: drawn, not an empty box
            ("loss", 2, 0.6),
            ("learning_rate", 2, 3e-4),
            ("rewards/margins", 2, 0.2),
        ],
    )
    make_user(REVIEWER, username="rita")
    login_with_cookie(page.context, live_server, "rita")
    detail = f"/training/jobs/{job.pk}/"
    page.add_init_script(
        "window.polls = {metrics: 0, status: 0};"
        "document.addEventListener('charts:polled', () => window.polls.metrics++);"
        "document.addEventListener('htmx:afterRequest', () => window.polls.status++);"
    )
    page.goto(detail)
    page.wait_for_function(
        "() => document.querySelectorAll('figure[data-chart] canvas').length"
        " && Array.from(document.querySelectorAll('figure[data-chart]:not([hidden])'"
        " + ' canvas')).every((c) => Chart.getChart(c))"
    )
    assert page.evaluate(PAINTED, "loss") > 1000
    loss = page.evaluate(
        "() => Chart.getChart(document.querySelector('figure[data-chart=loss] canvas'))"
        ".options.scales"
    )
    assert loss["x"]["title"]["text"] == "step (optimizer steps)"
    assert loss["y"]["title"]["text"] == "loss (nats)"
    assert page.locator("figure[data-chart=accuracy]").is_hidden()

    # The one-point eval series is a visible orange dot, and hover shows it.
    eval_point = page.evaluate(POINT, ["loss", 1])
    assert eval_point["radius"] > 0 and eval_point["pixel"][3] > 0
    red, green, blue, _ = eval_point["pixel"]
    assert red > 150 and blue < 100  # the second series' colour, #d35400
    page.mouse.move(eval_point["pageX"], eval_point["pageY"])
    tooltip = page.evaluate(
        "() => Chart.getChart(document.querySelector('figure[data-chart=loss] canvas'))"
        ".tooltip.body.map((b) => b.lines.join(' ')).join(' | ')"
    )
    assert "eval: 0.9 nats" in tooltip

    # Open sections stay open and the scroll stays put across two polls.
    page.locator("#job-config summary").click()
    page.get_by_text("Log", exact=True).click()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    scroll = page.evaluate("window.scrollY")
    assert scroll > 0
    TrainingJob.objects.filter(pk=job.pk).update(
        progress_step=4, log_tail="01:00:00 step 2: loss=0.6\n01:00:02 step 3 done"
    )
    wait_for_polls(page, "metrics", 2)
    wait_for_polls(page, "status", 2)
    assert page.locator("#job-config").get_attribute("open") is not None
    assert page.locator("#job-log").text_content().endswith("step 3 done")
    assert page.locator("#job-log").is_visible()
    assert page.evaluate("window.scrollY") == scroll
    assert '"beta": 0.1' in page.locator("#job-config pre").text_content()

    # New rows are appended; a new key gets its own chart under All metrics,
    # a named chart's first row reveals it.
    add_metrics(
        job,
        [
            ("loss", 3, 0.55),
            ("eval_rewards/accuracies", 3, 0.75),
            ("rewards/chosen", 3, 0.1),
        ],
    )
    wait_for_polls(page, "metrics", 1)
    page.wait_for_function(
        "() => Chart.getChart(document.querySelector("
        "'figure[data-chart=loss] canvas')).data.datasets[0].data.length === 4"
    )
    assert page.evaluate(LENGTHS, "loss") == [4, 1]
    assert page.locator("figure[data-chart=accuracy]").is_visible()
    page.wait_for_function(f"() => ({PAINTED})('accuracy') > 500")
    assert page.evaluate(LENGTHS, "metric:rewards/chosen") == [1]
    # Charts drawn inside the closed "All metrics" section size themselves
    # when it opens.
    page.get_by_text("All metrics", exact=True).click()
    page.wait_for_function(f"() => ({PAINTED})('metric:grad_norm') > 500")

    # A finished job stops both polls.
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded", progress_step=10)
    page.wait_for_function(
        "() => !('chartLive' in document.querySelector('[data-chart-feed]').dataset)"
    )
    page.locator("#job-status .status-succeeded").wait_for()
    polled = page.evaluate("window.polls.metrics + window.polls.status")
    page.wait_for_timeout(2500)
    assert page.evaluate("window.polls.metrics + window.polls.status") == polled
    assert page.locator("#job-config").get_attribute("open") is not None
    assert page.js_errors == []

    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#job-config summary").click()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "job-detail.png"), full_page=True)
