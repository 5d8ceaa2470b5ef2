from __future__ import annotations

import logging

from celery import shared_task

from labeling.services.queue import lease_release_expired

logger = logging.getLogger(__name__)


@shared_task(name="labeling.lease_release_expired", ignore_result=True)
def lease_release_expired_task() -> int:
    """Housekeeping: mark expired leases (the queue never needs it)."""
    return lease_release_expired()
