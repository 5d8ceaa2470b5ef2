from __future__ import annotations

import functools

import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

from core.heartbeat import worker_words

register = template.Library()

_ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "pre",
    "code",
    "blockquote",
    "em",
    "strong",
    "del",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
    "sup",
    "sub",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "th": {"align"},
    "td": {"align"},
}


# html=False: raw HTML in a completion is shown as text, exactly as the model
# wrote it, instead of being interpreted or silently dropped.
# breaks=True: a single line break the model wrote stays a line break (a poem
# and the same words on one line must not look identical to annotators).
_md = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "breaks": True}
).enable(["table", "strikethrough"])


@register.filter(name="worker")
def worker(name: str) -> str:
    """A job's ``host:pid`` worker as words: ``host (pid 123)``."""
    return worker_words(name or "")


@register.filter(name="markdown")
def render_markdown(text: str) -> SafeString:
    """Markdown → HTML with raw HTML escaped, then through an allow-list
    sanitizer (defence in depth: links keep only safe schemes)."""
    text = str(text or "")
    if len(text) <= CACHED_TEXT_MAX:
        return mark_safe(_sanitized_html_cached(text))  # noqa: S308 - nh3 output
    return mark_safe(_sanitized_html(text))  # noqa: S308 - nh3 output


#: Texts up to this many characters are rendered once per process while
#: recent (``_sanitized_html_cached``): at most ~1,024 x (8k + its HTML).
CACHED_TEXT_MAX = 8192


@functools.lru_cache(maxsize=1024)
def _sanitized_html_cached(text: str) -> str:
    """The same text gives the same HTML, so each process renders it once
    while it is recent: a prompt shown on each of its pairs' cards, a
    campaign's guidelines on every page. (Completions are rendered once,
    when they are stored.)"""
    return _sanitized_html(text)


def _sanitized_html(text: str) -> str:
    return nh3.clean(
        _md.render(text),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
