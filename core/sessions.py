"""Sessions read from Redis, kept in PostgreSQL (``SESSION_ENGINE``).

Django's ``cached_db`` engine: every write goes to the database and then to
the cache, a read goes to the cache first, and logging out deletes both, so a
session ended in one process is gone in every other at once. A page request
then costs no SQL statement for its session.

One difference: Django's engine already falls back to the database when the
cache cannot be read, but fails the request when it cannot refill the cache
after that read. Here a Redis that is down or slow (``socket_timeout`` in
``CACHES``) only costs the database read, so pages keep working. Deleting a
session still fails loudly when Redis cannot be reached: a logout that left
the cached copy working would be worse than an error.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.sessions.backends import cached_db

logger = logging.getLogger(__name__)


class SessionStore(cached_db.SessionStore):
    def load(self) -> dict[str, Any]:
        try:
            data = self._cache.get(self.cache_key)
        except Exception:
            logger.warning("core.sessions.cache_unreadable", exc_info=True)
            data = None
        if data is not None:
            return data
        stored = self._get_session_from_db()
        if stored is None:
            return {}
        data = self.decode(stored.session_data)
        try:
            self._cache.set(
                self.cache_key, data, self.get_expiry_age(expiry=stored.expire_date)
            )
        except Exception:
            logger.warning("core.sessions.cache_unwritable", exc_info=True)
        return data
