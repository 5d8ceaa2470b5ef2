import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("arbiter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """Report what this worker has (core.workers) and keep reporting it."""
    from core.workers import worker_started

    queues = [queue.name for queue in sender.task_consumer.queues]
    worker_started(name=sender.hostname, queues=queues)


@worker_shutdown.connect
def _worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    from core.workers import worker_stopped

    worker_stopped()
