"""Measurements around the window: CPU split, gunicorn's request times,
and the double-assignment audit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _proc_tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_snapshot(groups: dict[str, int | None]) -> dict[str, dict[int, float]]:
    import psutil

    snap: dict[str, dict[int, float]] = {"_machine": {0: _machine_busy_seconds()}}
    for name, pid in groups.items():
        snap[name] = {}
        procs = _proc_tree(pid) if pid is not None else [psutil.Process()]
        if pid is None:
            procs = procs[:1]  # this process only (the load generator)
        for p in procs:
            try:
                t = p.cpu_times()
                snap[name][p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return snap


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def machine_busy_percent(seconds: float) -> float:
    before = _machine_busy_seconds()
    time.sleep(seconds)
    return 100 * (_machine_busy_seconds() - before) / seconds


def cpu_delta(
    before: dict[str, dict[int, float]],
    after: dict[str, dict[int, float]],
    seconds: float,
) -> dict[str, float]:
    """Percent of one core used by each group during the window."""
    out = {}
    for name, procs in after.items():
        used = sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in procs.items())
        out[name] = 100 * used / seconds
    machine = out.pop("_machine")
    # Everything else on the machine: other people's tests, builds, servers.
    out["other"] = max(0.0, machine - sum(out.values()))
    return out


def access_log_times(path: Path, start: int, end: int) -> dict[str, list[float]]:
    """Server-side request times (ms) by endpoint, from the gunicorn access log."""
    out: dict[str, list[float]] = {"next": [], "submit": []}
    with open(path, "rb") as f:
        f.seek(start)
        chunk = f.read(max(0, end - start))
    for line in chunk.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        url, status, micros = parts
        # API: next/ and preference/ (which with ?next=1 brings the next
        # pair); the page: the "start" post and the submit (with the card).
        if status in ("200", "204") and (
            url.endswith("/next/") or url.endswith("/label/")
        ):
            out["next"].append(int(micros) / 1000)
        elif (
            (url.endswith("/preference/") or url.endswith("/ranking/"))
            and status == "201"
        ) or (url.endswith("/submit/") and status == "200"):
            out["submit"].append(int(micros) / 1000)
    return out


def audit(campaign_id: int, k: int) -> dict[str, int]:
    """Double assignments: pairs with more than k labels, pairs that had more
    than k leases live at the same moment, and counters that disagree."""
    from django.db import connection

    gold = "AND NOT c.is_gold" if _has_column("labeling_comparison", "is_gold") else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*) FROM (
                SELECT p.comparison_id FROM labeling_preference p
                JOIN labeling_comparison c ON c.id = p.comparison_id
                WHERE c.campaign_id = %s {gold} AND p.source = 'annotator'
                GROUP BY p.comparison_id HAVING count(*) > %s
            ) x
            """,
            [campaign_id, k],
        )
        over_labeled = cursor.fetchone()[0]
        # Rank campaigns: rankings (one per label) on their ranked comparisons.
        ranked = _has_column("labeling_comparison", "is_ranked")
        if ranked:
            cursor.execute(
                """
                SELECT count(*) FROM (
                    SELECT r.comparison_id FROM labeling_ranking r
                    JOIN labeling_comparison c ON c.id = r.comparison_id
                    WHERE c.campaign_id = %s AND NOT c.is_gold
                    GROUP BY r.comparison_id HAVING count(*) > %s
                ) x
                """,
                [campaign_id, k],
            )
            over_labeled += cursor.fetchone()[0]
        rankings = (
            "+ (SELECT count(*) FROM labeling_ranking r WHERE r.comparison_id = c.id)"
            if ranked
            else ""
        )
        # A lease is live from its creation until it was submitted/skipped
        # (updated_at) or expired; count, at each lease's start, the leases
        # of the same pair live at that moment (itself included).
        cursor.execute(
            """
            WITH l AS (
                SELECT id, comparison_id, created_at AS s,
                       CASE WHEN status IN ('submitted', 'skipped') THEN updated_at
                            ELSE expires_at END AS e
                FROM labeling_lease WHERE campaign_id = %s
            )
            SELECT count(DISTINCT comparison_id) FROM (
                SELECT l1.id, l1.comparison_id, count(*) AS live
                FROM l l1 JOIN l l2 ON l2.comparison_id = l1.comparison_id
                                  AND l2.s <= l1.s AND l2.e > l1.s
                GROUP BY l1.id, l1.comparison_id
            ) x WHERE live > %s
            """,
            [campaign_id, k],
        )
        over_leased = cursor.fetchone()[0]
        cursor.execute(
            f"""
            SELECT count(*) FROM labeling_comparison c
            WHERE c.campaign_id = %s {gold}
              AND c.label_count
                  + (SELECT count(*) FROM unnest(c.lease_expiries) e WHERE e > now()) > %s
            """,
            [campaign_id, k],
        )
        over_slots = cursor.fetchone()[0]
        cursor.execute(
            f"""
            SELECT count(*) FROM labeling_comparison c
            WHERE c.campaign_id = %s AND (c.label_count > 0 OR c.status <> 'open')
              AND c.label_count <> (SELECT count(*) FROM labeling_preference p
                                    WHERE p.comparison_id = c.id AND p.source = 'annotator')
                                   {rankings}
            """,
            [campaign_id],
        )
        mismatched = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*), count(DISTINCT comparison_id) FROM labeling_lease WHERE campaign_id = %s",
            [campaign_id],
        )
        leases, leased_pairs = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM labeling_comparison WHERE campaign_id = %s"
            " AND status NOT IN ('open', 'implied')",
            [campaign_id],
        )
        closed = cursor.fetchone()[0]
    return {
        "over_labeled": over_labeled,
        "over_leased": over_leased,
        "over_slots": over_slots,
        "counter_mismatch": mismatched,
        "leases": leases,
        "leased_pairs": leased_pairs,
        "closed": closed,
    }


def _has_column(table: str, column: str) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return cursor.fetchone() is not None


def pg_background(dsn: str) -> dict[str, float]:
    """PostgreSQL's own work so far, for a window's delta: checkpoints (and
    the buffers they wrote, their write + sync seconds), autovacuum and
    autoanalyze runs on the labeling tables, and table or index buffers
    that client backends had to write (or fsync) themselves. A tail that
    lines up with one of these is PostgreSQL's housekeeping, not the
    queue."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        checkpoints, buffers, seconds = conn.execute(
            "SELECT num_timed + num_requested, buffers_written,"
            " (write_time + sync_time) / 1000.0 FROM pg_stat_checkpointer"
        ).fetchone()
        out = {
            "checkpoints": float(checkpoints),
            "checkpoint_buffers": float(buffers),
            "checkpoint_seconds": float(seconds),
        }
        for table, vacuums, analyzes in conn.execute(
            "SELECT relname, autovacuum_count, autoanalyze_count"
            " FROM pg_stat_user_tables WHERE relname LIKE 'labeling\\_%%'"
        ):
            out[f"autovacuum:{table}"] = float(vacuums)
            out[f"autoanalyze:{table}"] = float(analyzes)
        # Table and index pages only: a commit's WAL flush is counted
        # under object 'wal' (PostgreSQL 18) and is every label's due.
        writes, fsyncs = conn.execute(
            "SELECT coalesce(sum(writes), 0), coalesce(sum(fsyncs), 0)"
            " FROM pg_stat_io WHERE backend_type = 'client backend'"
            " AND object = 'relation'"
        ).fetchone()
        out["backend_writes"] = float(writes)
        out["backend_fsyncs"] = float(fsyncs)
    return out


def pg_background_delta(
    before: dict[str, float], after: dict[str, float]
) -> dict[str, float]:
    """What changed between two ``pg_background`` snapshots (nonzero only)."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    return {key: value for key, value in delta.items() if value}
