"""Template helpers for the reviewer pages."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from core.diff import word_diff as _word_diff

register = template.Library()

# Gold accuracy over fewer answers than this reads as "too few", not as a
# finding; the same minimum that training's reliability weights use.
GOLD_MIN_N = 5


@register.simple_tag
def word_diff(left: str, right: str) -> tuple[SafeString, SafeString]:
    """``{% word_diff a b as diff %}``: ``diff.0`` and ``diff.1`` are the two
    texts as escaped HTML with the changed words marked."""
    return _word_diff(left, right)


@register.filter
def gold_too_few(n: int | None) -> bool:
    """Whether a gold accuracy over ``n`` answers is too few to read."""
    return (n or 0) < GOLD_MIN_N


@register.simple_tag
def gold_min_n() -> int:
    return GOLD_MIN_N
