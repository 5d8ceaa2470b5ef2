"""Cached campaign reports: what pages read, and how they are kept fresh.

A campaign has one :class:`~core.models.Report` row per kind. The protocol:

* Services that change labels call :func:`reports_mark_stale` inside their
  transaction. One ``UPDATE`` marks the campaign's reports stale and, unless
  a refresh is already queued, records the request and enqueues
  ``models_hub.reports_refresh`` with a countdown after commit. Labels that
  arrive while a refresh is queued change nothing (the debounce); a campaign
  nobody has looked at has no rows and costs nothing.
* Pages call :func:`report_for_page`: it reads the row and writes none;
  when there is no report yet (or a stale one whose refresh looks lost) it
  sends a refresh to the broker, and the task creates the rows.
* The task calls :func:`reports_ensure` (creates missing rows) and
  :func:`reports_refresh_claim` (clears the request, so labels arriving from
  then on queue the next refresh), computes, then :func:`report_store`; a
  report stays stale when labels arrived meanwhile.

A request older than ``REQUEST_RETRY_AFTER`` counts as lost (a broker
restart, a worker killed), so the next label or page view queues another.
The task is idempotent: a message that finds nothing stale returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import BooleanField, Case, Q, Value, When
from django.utils import timezone

from core.enqueue import enqueue
from core.models import Report

logger = logging.getLogger(__name__)

REFRESH_TASK = "models_hub.reports_refresh"
#: Labels within this many seconds of the first one share one refresh.
REFRESH_COUNTDOWN_S = 5
REQUEST_RETRY_AFTER = timedelta(minutes=10)
PAGE_REQUEST_GUARD_S = 60


@dataclass(frozen=True)
class CachedReport:
    """A report as a page shows it. ``payload`` is ``None`` until the first
    refresh has finished ("computing…"); ``stale`` means labels changed
    since ``computed_at`` and a refresh is on its way ("updating…")."""

    kind: str
    payload: dict[str, Any] | None
    computed_at: datetime | None
    stale: bool
    label_count: int
    last_preference_id: int | None

    @property
    def computing(self) -> bool:
        return self.computed_at is None

    @property
    def status(self) -> str:
        """``computing`` (no figures yet), ``updating`` (figures, refresh on
        its way) or ``current``."""
        if self.computing:
            return "computing"
        return "updating" if self.stale else "current"

    def meta(self) -> dict[str, Any]:
        """What an API response says about the figures it carries."""
        return {
            "status": self.status,
            "computed_at": self.computed_at.isoformat() if self.computed_at else None,
            "label_count": self.label_count,
            "last_preference_id": self.last_preference_id,
        }


def _cached(row: Report) -> CachedReport:
    return CachedReport(
        kind=row.kind,
        payload=row.payload if row.computed_at is not None else None,
        computed_at=row.computed_at,
        stale=row.stale,
        label_count=row.label_count,
        last_preference_id=row.last_preference_id,
    )


def report_get(*, campaign_id: int, kind: str) -> CachedReport | None:
    """The stored report, or ``None`` when the campaign has none of this kind."""
    row = Report.objects.filter(campaign_id=campaign_id, kind=kind).first()
    return _cached(row) if row is not None else None


def reports_mark_stale(*, campaign_id: int) -> bool:
    """Labels of ``campaign_id`` changed: mark its reports stale and queue one
    debounced refresh. Call inside the transaction that changed them (the
    task is sent after commit). Returns whether a refresh was queued.

    One statement; it updates no row while a refresh is already queued, so
    the labeling hot path pays one index lookup.
    """
    now = timezone.now()
    queued = (
        Report.objects.filter(campaign_id=campaign_id)
        .filter(
            Q(refresh_requested_at__isnull=True)
            | Q(refresh_requested_at__lt=now - REQUEST_RETRY_AFTER)
        )
        .update(stale=True, refresh_requested_at=now, updated_at=now)
    )
    if queued:
        enqueue(REFRESH_TASK, campaign_id, countdown=REFRESH_COUNTDOWN_S)
        logger.debug("core.reports.refresh_queued campaign=%s", campaign_id)
    return bool(queued)


def report_for_page(*, campaign_id: int, kind: str) -> CachedReport:
    """The report a page shows; reads only (a GET writes no row).

    With no report yet, or a stale one that nothing has touched for
    ``REQUEST_RETRY_AFTER`` (its refresh message was lost), it sends a
    refresh to the broker, at most once per ``PAGE_REQUEST_GUARD_S`` per
    campaign and web process; the task is idempotent, so an occasional
    duplicate only recomputes. No statistics are computed here, ever.
    """
    row = Report.objects.filter(campaign_id=campaign_id, kind=kind).first()
    lost = timezone.now() - REQUEST_RETRY_AFTER
    if row is None or (row.stale and row.updated_at < lost):
        if cache.add(
            f"core.reports.requested:{campaign_id}", True, PAGE_REQUEST_GUARD_S
        ):
            enqueue(REFRESH_TASK, campaign_id, countdown=0)
    if row is None:
        return CachedReport(
            kind=kind,
            payload=None,
            computed_at=None,
            stale=True,
            label_count=0,
            last_preference_id=None,
        )
    return _cached(row)


def reports_ensure(*, campaign_id: int) -> None:
    """Create the campaign's missing report rows (stale, nothing computed)."""
    Report.objects.bulk_create(
        [Report(campaign_id=campaign_id, kind=kind) for kind in Report.Kind.values],
        ignore_conflicts=True,
    )


def reports_refresh_claim(*, campaign_id: int) -> bool:
    """Start a refresh of ``campaign_id``: clear its queued request, so labels
    recorded from now on queue the next one. Returns ``False`` when no report
    is stale (a duplicate or redelivered message: nothing to do). Call
    :func:`reports_ensure` first; a campaign without rows is refreshed."""
    with transaction.atomic():
        rows = list(
            Report.objects.select_for_update()
            .filter(campaign_id=campaign_id)
            .values_list("stale", flat=True)
        )
        if rows and not any(rows):
            return False
        Report.objects.filter(campaign_id=campaign_id).update(refresh_requested_at=None)
    return True


def report_store(
    *,
    campaign_id: int,
    kind: str,
    payload: dict[str, Any],
    computed_at: datetime,
    label_count: int,
    last_preference_id: int | None,
) -> None:
    """Save a computed report. It stays stale when a refresh was queued after
    :func:`reports_refresh_claim` (labels changed while computing)."""
    Report.objects.get_or_create(campaign_id=campaign_id, kind=kind)
    Report.objects.filter(campaign_id=campaign_id, kind=kind).update(
        payload=payload,
        computed_at=computed_at,
        label_count=label_count,
        last_preference_id=last_preference_id,
        stale=Case(
            When(refresh_requested_at__isnull=True, then=Value(False)),
            default=Value(True),
            output_field=BooleanField(),
        ),
        updated_at=timezone.now(),
    )
