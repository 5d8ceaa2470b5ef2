"""The test broker seen from a test: pause the gpu worker's queue, purge a
queue, list the tasks waiting in one (Redis, as in production)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def gpu_queue_paused(celery_workers: dict[str, Any]) -> Iterator[None]:
    """The session's gpu worker stops taking messages from the gpu queue
    inside the block (they wait there, as behind a long training job) and
    takes them again after it."""
    from config.celery import app

    replies = app.control.ping(timeout=1.0) or []
    gpu = [name for reply in replies for name in reply if name.startswith("test-gpu@")]
    assert gpu, f"no gpu worker answered: {replies}"
    app.control.cancel_consumer("gpu", destination=gpu, reply=True, timeout=5)
    # A BRPOP already waiting on the queue returns within 1 s (brpop_timeout).
    time.sleep(1.5)
    try:
        yield
    finally:
        app.control.add_consumer("gpu", destination=gpu, reply=True, timeout=5)


def queue_purge(queue: str) -> None:
    """Drop every message waiting in ``queue``, as a Redis that restarted
    without its data would."""
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def queue_task_names(queue: str) -> list[str]:
    """The task name of each message waiting in ``queue``."""
    from config.celery import app

    with app.connection_for_read() as conn:
        raw = conn.default_channel.client.lrange(queue, 0, -1)
    return [json.loads(item)["headers"]["task"] for item in raw]
