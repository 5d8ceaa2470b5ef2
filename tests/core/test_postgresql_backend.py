"""core.postgresql: the health check asks the socket before the server."""

from __future__ import annotations

import select

import psycopg
import pytest
from django.db import connection

from tests.conftest import _test_database_url


def _request_starts() -> int:
    """What a request's start does to a kept connection; returns the
    ``SELECT 1``s the health check sent."""
    sent = connection.health_check_queries
    connection.close_if_unusable_or_obsolete()
    connection.close_if_health_check_failed()
    return connection.health_check_queries - sent


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_healthy_idle_connection_is_kept_without_a_round_trip() -> None:
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    pid = _backend_pid()
    for _ in range(3):
        assert _request_starts() == 0
        assert _backend_pid() == pid


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_closed_is_asked_and_replaced() -> None:
    pid = _backend_pid()
    with psycopg.connect(_test_database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
    assert _request_starts() == 1
    assert connection.connection is None
    assert _backend_pid() != pid


@pytest.mark.django_db(transaction=True)
def test_a_notice_on_an_idle_connection_is_asked_and_the_connection_kept() -> None:
    """A notification arrived between requests: the socket reads as ready,
    ``SELECT 1`` answers, and the connection is kept."""
    pid = _backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN arbiter_health_check_test")
    with psycopg.connect(_test_database_url(), autocommit=True) as other:
        other.execute("NOTIFY arbiter_health_check_test, 'hello'")
    # The server sends it to the idle connection a moment later.
    poller = select.poll()
    poller.register(connection.connection.pgconn.socket, select.POLLIN)
    assert poller.poll(10_000)
    assert _request_starts() == 1
    assert _backend_pid() == pid
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


def _prepared(conn: object) -> list[str]:
    with conn.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def _run_hot_statement(conn: object, times: int) -> None:
    for n in range(times):
        with conn.prepared_cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute("SELECT %s::int + 1 AS hot_statement", [n])
            assert cursor.fetchone()[0] == n + 1


@pytest.mark.django_db(transaction=True)
def test_the_prepared_cursor_prepares_a_statement_after_a_few_runs() -> None:
    """A label's statements are parsed once per connection; Django's own
    cursors bind on the client and prepare nothing."""
    from core.postgresql.base import PREPARE_AFTER

    connection.close()
    _run_hot_statement(connection, PREPARE_AFTER)
    assert not any("hot_statement" in s for s in _prepared(connection))
    _run_hot_statement(connection, 1)
    assert any("hot_statement" in s for s in _prepared(connection))
    for _ in range(10):
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::int AS django_statement", [1])
    assert not any("django_statement" in s for s in _prepared(connection))


@pytest.mark.django_db(transaction=True)
def test_prepared_statements_can_be_turned_off_for_a_pooler(settings: object) -> None:
    settings.ARBITER_PREPARED_STATEMENTS = False  # type: ignore[attr-defined]
    connection.close()
    _run_hot_statement(connection, 10)
    assert _prepared(connection) == []
    connection.close()
