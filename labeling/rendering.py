"""A completion's sanitised HTML, rendered once when the completion is stored
(``Completion.html``) instead of on every card that shows it."""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe

from core.templatetags.arbiter import render_markdown


def completion_html(text: str) -> str:
    """What the ``markdown`` filter renders of ``text``: Markdown with raw HTML
    escaped, through the allow-list sanitiser. Store it in ``Completion.html``."""
    return str(render_markdown(text))


def completion_html_of(completion: object) -> SafeString:
    """The stored HTML of ``completion``; rendered here for a row stored
    without it (an empty ``html`` of a non-empty text)."""
    text = getattr(completion, "text", "") or ""
    html = getattr(completion, "html", "") or ""
    if text and not html:
        return render_markdown(text)
    return mark_safe(html)  # noqa: S308 - sanitised by render_markdown when stored
