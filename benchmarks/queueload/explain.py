"""Statements: pg_stat_statements counts, EXPLAIN ANALYZE of the queue's
statement, and the in-process query trace of one label."""

from __future__ import annotations

import math
import statistics

from .shared import log

TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET ", "SHOW ")


def is_fk_check(query: str) -> bool:
    """PostgreSQL's own foreign-key trigger lookups: no client round trip."""
    return "FOR KEY SHARE OF x" in query and "FROM ONLY" in query


def pgss_read(dsn: str) -> list[tuple[str, int, float]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT ILIKE '%%pg_stat_statements%%'"
        ).fetchall()
    return [(q, int(c), float(t)) for q, c, t in rows]


def pgss_reset(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


EXPLAIN_REPEAT = 15


def explain_lease_next(campaign_id: int, annotator_id: int) -> tuple[float, list[str]]:
    """EXPLAIN ANALYZE of the queue's own statement, in a rolled-back
    transaction, as a user who has labeled nothing: the plan and its time."""
    from django.db import connection, transaction
    from django.utils import timezone

    try:
        from labeling.services.queue import _LEASE_NEXT_SQL
    except ImportError:
        return math.nan, ["(labeling.services.queue._LEASE_NEXT_SQL not found)"]
    from labeling.models import Campaign

    campaign = Campaign.objects.get(pk=campaign_id)
    now = timezone.now()
    params = {
        "campaign_id": campaign_id,
        "annotator_id": annotator_id,
        "k": campaign.overlap_k,
        "now": now,
        "expires_at": now,
        # The one-statement lease (live lease, pick, insert, pair read);
        # ignored by the older statement.
        "exclude_lease": 0,
        "exclude_comparison": 0,
        "want_gold": False,
        "a_on_left": True,
    }
    sql = _LEASE_NEXT_SQL.format(lock_mode="SKIP LOCKED")
    times: list[float] = []
    plan: list[str] = []
    try:
        for _ in range(EXPLAIN_REPEAT):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
                lines = [row[0] for row in cursor.fetchall()]
                transaction.set_rollback(True)
            plan = plan or lines
            times += [
                float(ln.split()[2]) for ln in lines if ln.startswith("Execution Time:")
            ]
    except Exception as exc:  # noqa: BLE001 - the statement's parameters may have changed
        return math.nan, [f"(EXPLAIN failed: {exc})"]
    # The queue index scan and what it read: the part that could grow with size.
    keep: list[str] = []
    for n, line in enumerate(plan):
        if "labeling_queue_idx" in line or (
            "Index Scan" in line and not keep and "picked" in line
        ):
            keep.append(line.strip().removeprefix("->").strip())
            for follow in plan[n + 1 :]:
                if "->" in follow:
                    break
                if follow.strip().startswith(
                    ("Rows Removed", "Buffers", "Index Searches")
                ):
                    keep.append(follow.strip())
            break
    return (statistics.median(times) if times else math.nan), keep


def lease_next_sql_stats(rows: list[tuple[str, int, float]]) -> tuple[int, float]:
    """Calls and mean time of the queue's pick-and-reserve statement."""
    calls, total = 0, 0.0
    for query, c, t in rows:
        if "WITH picked AS" in query or "FOR UPDATE OF c" in query:
            calls += c
            total += t
    return calls, (total / calls if calls else math.nan)


def probe_queries(
    campaign_id: int, probe_token: str, rank_k: int = 0
) -> tuple[list[str], list[str]] | None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Token {probe_token}")
    with CaptureQueriesContext(connection) as nxt:
        resp = client.post(f"/api/v1/campaigns/{campaign_id}/next/")
    if resp.status_code != 200:
        log(f"probe: next answered {resp.status_code}")
        return None
    lease_id = resp.json()["lease_id"]
    with CaptureQueriesContext(connection) as sub:
        resp = client.post(
            f"/api/v1/leases/{lease_id}/ranking/"
            if rank_k
            else f"/api/v1/leases/{lease_id}/preference/",
            data={"ranks": list(range(1, rank_k + 1))}
            if rank_k
            else {"choice": "left"},
            content_type="application/json",
        )
    if resp.status_code != 201:
        log(f"probe: submit answered {resp.status_code}")
        return None
    return [q["sql"] for q in nxt.captured_queries], [
        q["sql"] for q in sub.captured_queries
    ]
