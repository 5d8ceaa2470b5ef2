"""Django's PostgreSQL backend, with a cheaper ``CONN_HEALTH_CHECKS`` and
prepared statements for the label's own statements (``prepared_cursor``).

Django checks a kept connection at the start of each request that uses it by
sending ``SELECT 1``: one round trip per request, a sixth of what a label
costs. This backend asks the socket first. A healthy idle connection has
nothing to read, so the check sends nothing. A server that closed the
connection (a restart, ``pg_terminate_backend``, an idle timeout) has left
its error message and the end of the stream on the socket, which then reads
as ready; so does a notice. Only then is ``SELECT 1`` sent, and it tells the
two apart. A connection inside a transaction, or in any state but idle,
gets Django's own check.

What the socket cannot show is a peer that vanished without closing (a
host that lost power, a cut network): no FIN ever arrives. ``SELECT 1`` would
not tell that either before the TCP timeout; keepalives
(``OPTIONS: {"keepalives_idle": …}``) are the setting for it.

Prepared statements live on one server connection. A pooler that hands a
client's statements to several server connections (PgBouncer before 1.21 in
transaction mode) cannot keep them: set ``ARBITER_PREPARED_STATEMENTS=false``
there, as Django leaves them off by default for the same reason.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base, operations
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg import pq

__all__ = ["DatabaseWrapper"]

# psycopg's default: a statement is prepared on its sixth run on a connection.
PREPARE_AFTER = 5


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:
        """What ``connection.queries`` and ``CaptureQueriesContext`` record:
        for ``prepared_cursor``'s statements, which psycopg sends apart from
        their parameters, the statement with its parameters inlined, as for
        Django's client-side bound ones."""
        if not isinstance(cursor, psycopg.ClientCursor):
            try:
                return self.compose_sql(sql, params)
            except psycopg.errors.DataError:
                return None
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    # SELECT 1s sent by the health check (benchmarks and tests read it).
    health_check_queries: int = 0

    def get_connection_params(self) -> dict[str, Any]:
        """Django's, with psycopg's prepared statements on after
        ``PREPARE_AFTER`` runs of a statement unless ``OPTIONS`` sets
        ``prepare_threshold`` or ``ARBITER_PREPARED_STATEMENTS`` is false.
        Only ``prepared_cursor``'s statements can be prepared: Django's own
        cursors bind parameters on the client and never are (unless
        ``OPTIONS`` asks for ``server_side_binding``, psycopg's default)."""
        params = super().get_connection_params()
        if "prepare_threshold" not in self.settings_dict["OPTIONS"] and getattr(
            settings, "ARBITER_PREPARED_STATEMENTS", True
        ):
            params["prepare_threshold"] = PREPARE_AFTER
        return params

    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        pgconn = conn.pgconn
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return self._ask_the_server()
        try:
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN)
            ready = poller.poll(0)
        except (OSError, ValueError, psycopg.Error):
            return self._ask_the_server()
        if ready:
            # The server wrote to an idle connection: a goodbye or a notice.
            return self._ask_the_server()
        return pgconn.status == pq.ConnStatus.OK

    def _ask_the_server(self) -> bool:
        self.health_check_queries += 1
        return super().is_usable()

    def prepared_cursor(self) -> Any:
        """A cursor for the few statements every label runs: its parameters
        travel apart from the statement (server-side binding), so psycopg
        prepares a statement it has run ``PREPARE_AFTER`` times on this
        connection, and PostgreSQL then neither parses nor analyses it again
        (and plans it once, when its generic plan costs no more than the
        custom ones). Django's other statements keep client-side binding."""
        self.ensure_connection()
        raw = base.ServerBindingCursor(self.connection)
        tzloader = self.connection.adapters.get_loader(
            base.TIMESTAMPTZ_OID, pq.Format.TEXT
        )
        if self.timezone != tzloader.timezone:
            register_tzloader(self.timezone, raw)
        return self._prepare_cursor(raw)
