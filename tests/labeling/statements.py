"""Count the database round trips a request costs, as PostgreSQL sees them:
the SQL Django sends, BEGIN and COMMIT included (``CaptureQueriesContext``
records them), plus the ``SELECT 1`` that ``CONN_HEALTH_CHECKS`` sends before
a reused connection's first query in each request. The test client does not
recycle connections per request, so that check is added per request here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connection
from django.test.utils import CaptureQueriesContext


@dataclass
class RoundTrips:
    requests: int = 1
    sql: list[str] = field(default_factory=list)

    @property
    def health_checks(self) -> int:
        health = connection.settings_dict.get("CONN_HEALTH_CHECKS")
        return self.requests if health else 0

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
def count_round_trips(*, requests: int = 1) -> Iterator[RoundTrips]:
    """Counts on the default connection over ``requests`` HTTP requests. Use
    under ``django_db(transaction=True)``: inside a test's own transaction
    Django sends savepoints instead of BEGIN/COMMIT."""
    trips = RoundTrips(requests=requests)
    with CaptureQueriesContext(connection) as ctx:
        yield trips
    trips.sql = [q["sql"] for q in ctx.captured_queries]
