"""A heartbeat thread for long jobs: a row's ``heartbeat_at`` stays fresh
while its worker is alive, however long one model load or step takes.

A beat sweeper fails RUNNING rows whose heartbeat is older than
``ARBITER_HEARTBEAT_TIMEOUT``: that is how a killed worker's job ends.

The other half of a job's liveness is its message. ``task_messages_pending``
reads the broker (Redis): which messages of a task wait in its queue or are
reserved by a worker and not yet acknowledged. A QUEUED row with no such
message lost it (Redis restarted without its data, the broker was down when
the job was sent, a purged queue), and the sweepers send it again; a periodic
task is not queued a second time while one copy waits.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
from datetime import datetime
from types import TracebackType
from typing import Any

from celery import current_app
from django.db import connection, models
from django.utils import timezone

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


def worker_name() -> str:
    """How a job records the process that runs it: ``"host:pid"``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_words(worker: str) -> str:
    """``"host:pid"`` as a person reads it: ``"host (pid 123)"``; anything
    else as it is."""
    host, sep, pid = worker.rpartition(":")
    if sep and host and pid.isdigit():
        return f"{host} (pid {pid})"
    return worker


class Heartbeat:
    """Update ``model.heartbeat_at`` for row ``pk`` every few seconds until
    ``stop()`` (or the end of a ``with`` block)."""

    def __init__(
        self, model: type[models.Model], pk: int, *, every: float = HEARTBEAT_SECONDS
    ) -> None:
        self.model = model
        self.pk = pk
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.model._default_manager.filter(pk=self.pk).update(
                    heartbeat_at=timezone.now()
                )
            finally:
                connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _task_and_args(raw: Any) -> tuple[str, tuple[Any, ...]] | None:
    """(task name, positional args) of one raw kombu message (protocol 2)."""
    try:
        message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        if isinstance(message, list):  # an unacked entry: [message, exchange, key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        payload = json.loads(body)
        args = payload[0] if isinstance(payload, list) else payload.get("args", [])
        headers = message.get("headers", {})
        expires = headers.get("expires")
        if expires and datetime.fromisoformat(expires) <= timezone.now():
            return None  # a worker discards it unrun
        return str(headers.get("task", "")), tuple(args)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def task_messages_pending(*, name: str) -> set[tuple[Any, ...]] | None:
    """The positional args of every ``name`` message that waits in its queue
    (from ``CELERY_TASK_ROUTES``) or that a worker reserved and has not
    acknowledged yet (running under ``acks_late``, or prefetched); an expired
    message does not count, since no worker will run it.

    Returns None when the broker is not Redis (nothing to read then). Both
    are read in one MULTI, but a message a worker is just taking may be in
    neither for an instant: callers act only on rows older than that, and
    the tasks they send again are idempotent.
    """
    routes = current_app.conf.task_routes or {}
    route = routes.get(name, {}) if isinstance(routes, dict) else {}
    queue = route.get("queue") or current_app.conf.task_default_queue
    with current_app.connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return None
        channel: Any = conn.default_channel
        client = channel.client
        pipe = client.pipeline(transaction=True)
        lists = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
        for key in dict.fromkeys(lists):
            pipe.lrange(key, 0, -1)
        pipe.hvals(channel.unacked_key)
        results = pipe.execute()
    pending: set[tuple[Any, ...]] = set()
    for raw in (item for result in results for item in result):
        parsed = _task_and_args(raw)
        if parsed is not None and parsed[0] == name:
            pending.add(parsed[1])
    return pending
