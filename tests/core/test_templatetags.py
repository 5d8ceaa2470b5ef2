"""core.templatetags.arbiter: how model output is rendered for people."""

from __future__ import annotations

from core.templatetags import arbiter
from core.templatetags.arbiter import render_markdown, worker


def test_single_line_breaks_survive() -> None:
    """A poem keeps its lines; the same words on one line render differently."""
    poem = render_markdown("Roses are red,\nviolets are blue")
    one_line = render_markdown("Roses are red, violets are blue")
    assert "<br>" in poem or "<br />" in poem
    assert poem != one_line


def test_raw_html_stays_text_with_breaks_on() -> None:
    html = render_markdown("line one\n<script>alert(1)</script>")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_recent_text_is_rendered_once_and_a_long_one_every_time() -> None:
    arbiter._sanitized_html_cached.cache_clear()
    prompt = "Tell me about **cats** <img src=x onerror=alert(1)>"
    first = render_markdown(prompt)
    again = render_markdown(prompt)
    assert first == again and "<strong>cats</strong>" in again
    assert "<img" not in again  # raw HTML stays text
    info = arbiter._sanitized_html_cached.cache_info()
    assert (info.misses, info.hits) == (1, 1)

    long_text = "word " * (arbiter.CACHED_TEXT_MAX // 5 + 1)
    assert render_markdown(long_text) == render_markdown(long_text)
    assert arbiter._sanitized_html_cached.cache_info().currsize == 1


def test_a_worker_reads_as_host_and_pid() -> None:
    assert worker("gpu-box:19962") == "gpu-box (pid 19962)"
    assert worker("") == ""
