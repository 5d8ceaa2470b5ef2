"""Count the database round trips a request costs, as PostgreSQL sees them:
the SQL Django sends, BEGIN and COMMIT included (``CaptureQueriesContext``
records them), plus what ``CONN_HEALTH_CHECKS`` sends before a kept
connection's first query in a request. The test client does not run that
check (it keeps Django's per-request connection handling out), so it is run
here, as a request would, on the real connection; ``core.postgresql`` counts
the ``SELECT 1`` it sends (none while the idle connection's socket is quiet)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connection
from django.test.utils import CaptureQueriesContext


@dataclass
class RoundTrips:
    health_checks: int = 0
    sql: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.sql) + self.health_checks

    def describe(self) -> str:
        lines = [
            f"{self.total} round trips: {len(self.sql)} statements (BEGIN/COMMIT"
            f" included) + {self.health_checks} health checks"
        ]
        lines += [f"  {' '.join(sql.split())[:150]}" for sql in self.sql]
        return "\n".join(lines)


@contextmanager
def count_round_trips() -> Iterator[RoundTrips]:
    """Counts on the default connection over one HTTP request. Use under
    ``django_db(transaction=True)``: inside a test's own transaction Django
    sends savepoints instead of BEGIN/COMMIT."""
    trips = RoundTrips()
    connection.ensure_connection()
    sent = connection.health_check_queries
    # What a request's start does to a kept connection (request_started).
    connection.close_if_unusable_or_obsolete()
    connection.close_if_health_check_failed()
    trips.health_checks = connection.health_check_queries - sent
    with CaptureQueriesContext(connection) as ctx:
        yield trips
    trips.sql = [q["sql"] for q in ctx.captured_queries]
