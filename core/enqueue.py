"""The one way services hand work to Celery.

``enqueue("training.job_run", job.pk)`` sends the task by its stable name
once the surrounding transaction commits (at once outside a transaction), so
a worker never sees a row that is not there yet and a rolled-back write sends
nothing. Sending by name keeps services free of task imports: tasks call
services, never the other way round (an import-linter contract checks it).
The queue comes from ``CELERY_TASK_ROUTES``. A broker that is down makes the
send raise in the caller, after the commit: the work is never run inline.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue(name: str, *args: Any, **options: Any) -> None:
    """Send task ``name`` with JSON-serialisable ``args`` after commit.

    ``options`` go to ``send_task`` (``countdown``, ``expires``...).
    """

    def send() -> None:
        current_app.send_task(name, args=list(args), **options)
        logger.debug("core.enqueue.sent task=%s args=%s", name, args)

    transaction.on_commit(send)
