"""Drift alerts on pages of lower apps (the campaign list is ``labeling``'s,
which may not import the model hub): ``{% load drift_watch %}``, then
``{% drift_open_alert_counts rows as counts %}`` once for the whole list (one
query) and ``{{ counts|drift_count:campaign.pk }}`` per campaign."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template

from models_hub.drift_selectors import drift_open_alert_counts as open_counts

register = template.Library()


@register.simple_tag
def drift_open_alert_counts(rows: Iterable[Any]) -> dict[int, int]:
    """Open drift alerts per campaign of ``rows`` (campaigns, or tuples whose
    first item is the campaign)."""
    ids = [(row[0] if isinstance(row, tuple | list) else row).pk for row in rows]
    return open_counts(ids) if ids else {}


@register.filter
def drift_count(counts: dict[int, int], campaign_id: int) -> int:
    return counts.get(campaign_id, 0)
