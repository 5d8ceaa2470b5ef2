"""One run: reset the data, start the annotators, measure the window."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .client import Annotator, annotator_loop
from .data import dataset_reset
from .explain import (
    TX_CONTROL,
    explain_lease_next,
    is_fk_check,
    lease_next_sql_stats,
    pgss_read,
    pgss_reset,
)
from .measure import (
    access_log_times,
    audit,
    cpu_delta,
    cpu_snapshot,
    pg_background,
    pg_background_delta,
)
from .shared import SLOW_MS, pct


@dataclass
class RunResult:
    path: str  # "api" or "browser"
    tree: str  # "this" or "baseline"
    size: int
    annotators: int
    warmup: float
    think_ms: float
    labels: int
    seconds: float
    next_ms: list[float]
    submit_ms: list[float]
    server: dict[str, list[float]]
    statements: int
    tx_statements: int
    health_checks: int
    fk_checks: int
    db_ms: float
    top: list[tuple[str, int, float]]
    lease_sql_calls: int
    lease_sql_mean_ms: float
    explain_ms: float
    explain: list[str]
    cpu: dict[str, float]
    audit: dict[str, int]
    errors: dict[str, int]
    empty: int
    requests: int
    # PostgreSQL housekeeping inside the window (measure.pg_background).
    background: dict[str, float]
    # Next-pair answers slower than SLOW_MS, by the second of the window
    # they were asked in: a tail in one burst, or spread out.
    slow_by_second: dict[int, int]

    @property
    def labels_per_s(self) -> float:
        return self.labels / self.seconds

    @property
    def cpu_ms_per_label(self) -> float:
        """gunicorn + PostgreSQL CPU per label: robust to other load."""
        used = (self.cpu["gunicorn"] + self.cpu["postgres"]) * self.seconds * 10
        return used / self.labels if self.labels else math.nan

    @property
    def double_assignments(self) -> int:
        """Pairs over k labels, over k live leases, or over k slots now (must be 0)."""
        a = self.audit
        return a["over_labeled"] + a["over_leased"] + a["over_slots"]

    @property
    def p95_next(self) -> float:
        return pct(self.next_ms, 95)


def run_load(
    *,
    size: int,
    campaign_id: int,
    creds: list[tuple[int, str]],
    port: int,
    think_ms: float,
    warmup: float,
    duration: float,
    k: int,
    dsn: str,
    gunicorn_pid: int,
    pg_pid: int,
    access_log: Path,
    probe_user_id: int,
    path: str = "api",
    dist: str = "exp",
    sessions: dict[int, str] | None = None,
    tree: str = "this",
    rank_k: int = 0,
) -> RunResult:
    from django.db import connection

    dataset_reset(campaign_id)
    connection.close()
    annotators = [
        Annotator(uid, tok, session_key=(sessions or {}).get(uid, ""))
        for uid, tok in creds
    ]
    barrier = threading.Barrier(len(annotators) + 1)
    t_start = time.monotonic() + 0.5
    window_start = t_start + warmup
    window_end = window_start + duration
    threads = [
        threading.Thread(
            target=annotator_loop,
            args=(
                a,
                port,
                campaign_id,
                think_ms,
                window_end,
                barrier,
                path,
                dist,
                rank_k,
            ),
            daemon=True,
        )
        for a in annotators
    ]
    for t in threads:
        t.start()
    barrier.wait()
    groups = {"gunicorn": gunicorn_pid, "postgres": pg_pid, "loadgen": None}

    time.sleep(max(0.0, window_start - time.monotonic()))
    background_before = pg_background(dsn)  # before the reset: not counted
    pgss_reset(dsn)
    log_start = access_log.stat().st_size
    cpu_before = cpu_snapshot(groups)
    real_start = time.monotonic()
    time.sleep(max(0.0, window_end - time.monotonic()))
    cpu_after = cpu_snapshot(groups)
    real_seconds = time.monotonic() - real_start
    log_end = access_log.stat().st_size
    stats = pgss_read(dsn)
    background = pg_background_delta(background_before, pg_background(dsn))
    for t in threads:
        t.join(90)

    samples = [x for a in annotators for x in a.samples]
    # A request counts when it was sent and answered inside the window.
    in_window = [
        x
        for x in samples
        if x.start >= window_start and x.start + x.next_s <= window_end
    ]
    next_ms = [x.next_s * 1000 for x in in_window]
    slow_by_second = dict(
        Counter(
            int(x.start - window_start) for x in in_window if x.next_s * 1000 > SLOW_MS
        )
    )
    submits = [
        x
        for x in samples
        if x.submit_start is not None
        and x.submit_s is not None
        and x.submit_start >= window_start
        and x.submit_start + x.submit_s <= window_end
    ]
    submit_ms = [x.submit_s * 1000 for x in submits if x.submit_s is not None]
    # Labels: preferences created (201) whose submit completed in the window.
    labels = sum(
        1
        for x in samples
        if x.submit_start is not None
        and x.submit_s is not None
        and window_start <= x.submit_start + x.submit_s <= window_end
    )
    errors: dict[str, int] = {}
    for a in annotators:
        for key, n in a.errors.items():
            errors[key] = errors.get(key, 0) + n
    fk_checks = sum(c for q, c, _ in stats if is_fk_check(q))
    statements = sum(c for q, c, _ in stats if not is_fk_check(q))
    tx = sum(c for q, c, _ in stats if q.lstrip().upper().startswith(TX_CONTROL))
    health = sum(
        c
        for q, c, _ in stats
        if " ".join(q.split()).upper() in ("SELECT 1", "SELECT $1")
    )
    db_ms = sum(t for _, _, t in stats)
    top = sorted(stats, key=lambda r: -r[1])[:14]
    lease_calls, lease_mean = lease_next_sql_stats(stats)
    server = access_log_times(access_log, log_start, log_end)
    explain_ms, explain = explain_lease_next(campaign_id, probe_user_id)
    return RunResult(
        path=path,
        tree=tree,
        size=size,
        annotators=len(creds),
        warmup=warmup,
        think_ms=think_ms,
        labels=labels,
        seconds=duration,
        next_ms=next_ms,
        submit_ms=submit_ms,
        server=server,
        statements=statements,
        tx_statements=tx,
        health_checks=health,
        fk_checks=fk_checks,
        db_ms=db_ms,
        top=top,
        lease_sql_calls=lease_calls,
        lease_sql_mean_ms=lease_mean,
        explain_ms=explain_ms,
        explain=explain,
        cpu=cpu_delta(cpu_before, cpu_after, real_seconds),
        audit=audit(campaign_id, k),
        errors=errors,
        empty=sum(a.empty for a in annotators),
        requests=len(server["next"]) + len(server["submit"]),
        background=background,
        slow_by_second=slow_by_second,
    )
