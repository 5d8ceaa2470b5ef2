"""Round trips through a real broker and a real Celery worker process."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from labeling.models import Comparison, Lease
from labeling.services.queue import comparison_lease_next
from labeling.tasks import lease_release_expired_task
from tests.labeling.factories import CampaignFactory, make_pairs


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_lease_housekeeping_runs_on_a_real_worker(
    celery_workers: Any, annotator: Any
) -> None:
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    past = timezone.now() - timedelta(minutes=1)
    Lease.objects.filter(pk=lease.pk).update(expires_at=past)
    Comparison.objects.filter(pk=pair.pk).update(lease_expiries=[past])

    lease_release_expired_task.delay()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lease.refresh_from_db()
        if lease.status == Lease.Status.EXPIRED:
            break
        time.sleep(0.2)
    assert lease.status == Lease.Status.EXPIRED
    pair.refresh_from_db()
    assert pair.lease_expiries == []
