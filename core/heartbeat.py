"""A heartbeat thread for long jobs: a row's ``heartbeat_at`` stays fresh
while its worker is alive, however long one model load or step takes.

A beat sweeper fails RUNNING rows whose heartbeat is older than
``ARBITER_HEARTBEAT_TIMEOUT``: that is how a killed worker's job ends.
"""

from __future__ import annotations

import threading
from types import TracebackType

from django.db import connection, models
from django.utils import timezone

HEARTBEAT_SECONDS = 5.0


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
