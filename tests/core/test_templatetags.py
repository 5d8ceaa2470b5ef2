"""core.templatetags.arbiter: how model output is rendered for people."""

from __future__ import annotations

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


def test_a_worker_reads_as_host_and_pid() -> None:
    assert worker("gpu-box:19962") == "gpu-box (pid 19962)"
    assert worker("") == ""
