"""Printing: one block per run, the in-process query list, the summary."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .explain import EXPLAIN_REPEAT
from .shared import SLOW_MS, machine_percent, pct

if TYPE_CHECKING:
    from .run import RunResult

TARGET_P95_MS = 50.0
TARGET_RATIO = 1.2


def fmt_ms(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{v:6.1f}"


def report(r: RunResult, k: int, show_top: bool) -> None:
    a = r.audit
    double = r.double_assignments
    mode = (
        "no think time (closed loop, saturating)"
        if r.think_ms == 0
        else f"think time mean {r.think_ms:.0f} ms per pair"
    )
    print()
    if r.annotators == 1:
        mode = "baseline: service time without queueing"
    print(
        f"== [{r.path}, {r.tree} tree] {r.size:,} pending pairs | {r.annotators} annotator{'s' if r.annotators > 1 else ''} | k={k} | {mode}"
    )
    print(f"   measured {r.seconds:.0f} s after {r.warmup:.0f} s warm-up")
    print(
        f"   labels/s                {r.labels_per_s:8.1f}   ({r.labels:,} labels; pairs closed this run: "
        f"{a['closed']:,} of {r.size:,})"
    )
    print(
        f"   next-pair  (client)     p50 {fmt_ms(pct(r.next_ms, 50))}  p95 {fmt_ms(pct(r.next_ms, 95))}  "
        f"p99 {fmt_ms(pct(r.next_ms, 99))} ms   (n={len(r.next_ms):,})"
    )
    print(
        f"   requests   (server)     p50 {fmt_ms(pct(_served(r), 50))}  p95 {fmt_ms(pct(_served(r), 95))}  "
        f"p99 {fmt_ms(pct(_served(r), 99))} ms   (gunicorn request time of next/ and submits, "
        "no accept/thread queueing)"
    )
    print(
        f"   lease-next SQL (DB)     mean {r.lease_sql_mean_ms:6.2f} ms over {r.lease_sql_calls:,} calls "
        f"(pg_stat_statements exec time)"
    )
    print(
        f"   submit     (client)     p50 {fmt_ms(pct(r.submit_ms, 50))}  p95 {fmt_ms(pct(r.submit_ms, 95))}  "
        f"p99 {fmt_ms(pct(r.submit_ms, 99))} ms"
    )
    print(
        f"   submit     (server)     p50 {fmt_ms(pct(r.server['submit'], 50))}  p95 {fmt_ms(pct(r.server['submit'], 95))}  "
        f"p99 {fmt_ms(pct(r.server['submit'], 99))} ms"
    )
    if r.labels:
        sql = r.statements - r.tx_statements - r.health_checks
        print(
            f"   statements per label    {r.statements / r.labels:8.1f}   "
            f"(= {sql / r.labels:.1f} SQL + {r.tx_statements / r.labels:.1f} BEGIN/COMMIT/SAVEPOINT/RELEASE + "
            f"{r.health_checks / r.labels:.1f} 'SELECT 1' connection health checks; plus "
            f"{r.fk_checks / r.labels:.1f} FK-trigger lookups inside PostgreSQL; pg_stat_statements)"
        )
    cpu = r.cpu
    if r.labels and r.requests:
        print(
            f"   cost per label          server CPU {cpu['gunicorn'] * r.seconds * 10 / r.labels:6.1f} ms "
            f"(gunicorn, {cpu['gunicorn'] * r.seconds * 10 / r.requests:.1f} ms per request), "
            f"PostgreSQL CPU {cpu['postgres'] * r.seconds * 10 / r.labels:.1f} ms, "
            f"statement execution {r.db_ms / r.labels:.1f} ms"
        )
    print(
        f"   CPU (% of one core; {os.cpu_count()} cores = {machine_percent()}%)  gunicorn {cpu['gunicorn']:.0f}%  "
        f"postgres {cpu['postgres']:.0f}%  load generator {cpu['loadgen']:.0f}%  other processes {cpu['other']:.0f}%"
    )
    print(f"   PostgreSQL housekeeping {housekeeping_words(r.background)}")
    if r.slow_by_second:
        # With no think time every second queues alike; the seconds say
        # something only at a human pace.
        seconds = (
            "; by second of the window asked in: "
            + ", ".join(f"{sec}: {n}" for sec, n in sorted(r.slow_by_second.items()))
            if r.think_ms
            else " (closed loop: queueing)"
        )
        print(
            f"   next-pair over {SLOW_MS:.0f} ms  {sum(r.slow_by_second.values())} answers{seconds}"
        )
    print(
        f"   double assignments      {double}   (pairs with >k labels: {a['over_labeled']}; with >k overlapping "
        f"leases: {a['over_leased']}; with >k slots now: {a['over_slots']}; label counters off: "
        f"{a['counter_mismatch']}; leases {a['leases']:,} on {a['leased_pairs']:,} pairs)"
    )
    print(
        f"   queue SQL, EXPLAIN ANALYZE after the run (median of {EXPLAIN_REPEAT}): "
        f"{r.explain_ms:.3f} ms; " + " | ".join(r.explain)
    )
    if r.errors or r.empty:
        print(f"   errors {r.errors or '{}'}   empty-queue answers (204): {r.empty}")
    if show_top and r.labels:
        print("   top statements (calls per label, mean ms):")
        for query, calls, total in r.top:
            text = " ".join(query.split())
            print(
                f"     {calls / r.labels:5.2f}  {total / max(calls, 1):6.2f} ms  {text[:110]}"
            )


def housekeeping_words(background: dict[str, float]) -> str:
    """``RunResult.background`` in words: what PostgreSQL did on its own
    inside the window."""
    parts = []
    if background.get("checkpoints"):
        parts.append(
            f"checkpoints {background['checkpoints']:.0f} "
            f"({background.get('checkpoint_buffers', 0):,.0f} buffers, "
            f"{background.get('checkpoint_seconds', 0):.1f} s write + sync)"
        )
    for kind in ("autovacuum", "autoanalyze"):
        tables = sorted(
            key.split(":", 1)[1] for key in background if key.startswith(f"{kind}:")
        )
        if tables:
            parts.append(f"{kind} {', '.join(tables)}")
    if background.get("backend_writes") or background.get("backend_fsyncs"):
        parts.append(
            f"client backends wrote {background.get('backend_writes', 0):,.0f} buffers"
            f" and fsynced {background.get('backend_fsyncs', 0):,.0f} themselves"
        )
    return "; ".join(parts) if parts else "none in the window"


def print_probe(nxt: list[str], sub: list[str], size: int) -> None:
    """The queries of one label, traced in-process (``explain.probe_queries``)."""
    print()
    print(
        f"queries per label, in-process (CaptureQueriesContext, Django test client, one label on the "
        f"{size:,} campaign): next {len(nxt)} + submit {len(sub)} = {len(nxt) + len(sub)} "
        f"(excludes BEGIN/COMMIT and the CONN_HEALTH_CHECKS 'SELECT 1' that pg_stat_statements sees)"
    )
    for label, queries in (("next", nxt), ("submit", sub)):
        for q in queries:
            print(f"     {label:6s} {' '.join(q.split())[:120]}")


def summarize(
    results: list[RunResult], sizes: list[int], thinks: list[float], annotators: int
) -> None:
    print()
    print(
        "== summary (latencies in ms; client = measured by the load generator, srv = gunicorn request time)"
    )
    print(
        f"   {'path':>7} {'tree':>8} {'pairs':>10} {'users':>5} {'think':>6} {'labels/s':>8} {'next p50':>8} {'p95':>7} {'p99':>7} "
        f"{'srv p95':>7} {'SQL ms':>6} {'submit p95':>10} {'stmts/label':>11} {'CPU ms/label':>12} "
        f"{'other CPU':>9} {'double':>6}"
    )
    for r in results:
        double = r.double_assignments
        print(
            f"   {r.path:>7} {r.tree:>8} {r.size:>10,} {r.annotators:>5} {r.think_ms:>6.0f} {r.labels_per_s:>8.1f} {pct(r.next_ms, 50):>8.1f} "
            f"{pct(r.next_ms, 95):>7.1f} {pct(r.next_ms, 99):>7.1f} {pct(_served(r), 95):>7.1f} "
            f"{r.lease_sql_mean_ms:>6.2f} {pct(r.submit_ms, 95):>10.1f} "
            f"{(r.statements / r.labels if r.labels else math.nan):>11.1f} {r.cpu_ms_per_label:>12.1f} "
            f"{r.cpu['other']:>8.0f}% {double:>6}"
        )
    small, large = min(sizes), max(sizes)
    all_ok = True
    main = [r for r in results if r.annotators == annotators and r.tree == "this"]
    paths = list(dict.fromkeys(r.path for r in main))
    for think in thinks:
        for path in paths:
            by_size = {
                r.size: r for r in main if r.think_ms == think and r.path == path
            }
            mode = "no think time" if think == 0 else f"think {think:.0f} ms"
            mode = f"{path}, {mode}"
            if len(by_size) < len(sizes):
                continue
            all_ok = _targets(by_size, mode, annotators, small, large) and all_ok
    busiest = max((r.cpu["other"] for r in results), default=0.0)
    if busiest > 20:
        print(
            f"   NOTE: processes outside this benchmark used up to {busiest:.0f}% CPU during the measured windows "
            f"(of {machine_percent()}%); latencies include waiting for CPU they held."
        )
    print(f"   all targets: {'MET' if all_ok else 'NOT all met'}")


def _targets(
    by_size: dict[int, RunResult], mode: str, annotators: int, small: int, large: int
) -> bool:
    """Print the targets of one path and think time over its sizes; whether
    all were met."""
    p95_ok = all(r.p95_next < TARGET_P95_MS for r in by_size.values())
    worst = max(r.p95_next for r in by_size.values())
    print(
        f"   [{mode}] p95 next-pair < {TARGET_P95_MS:.0f} ms at {annotators} annotators: worst {worst:.1f} ms "
        f"-> {'MET' if p95_ok else 'MISSED'}"
    )
    ratio_ok = True
    if small != large:
        rs, rl = by_size[small], by_size[large]
        ratio = rl.p95_next / rs.p95_next
        srv_ratio = pct(_served(rl), 95) / pct(_served(rs), 95)
        sql_ratio = rl.lease_sql_mean_ms / rs.lease_sql_mean_ms
        ratio_ok = ratio <= TARGET_RATIO
        print(
            f"   [{mode}] p95 next-pair ratio {large:,}/{small:,}: {ratio:.2f} client "
            f"(target <= {TARGET_RATIO}) -> {'MET' if ratio_ok else 'MISSED'}; server {srv_ratio:.2f}; "
            f"queue SQL mean {sql_ratio:.2f}"
        )
    double_ok = all(r.double_assignments == 0 for r in by_size.values())
    print(
        f"   [{mode}] double assignments: {'0 -> MET' if double_ok else 'FOUND -> MISSED'}"
    )
    return p95_ok and ratio_ok and double_ok


def _key(r: RunResult) -> tuple[str, int, int, float]:
    return (r.path, r.size, r.annotators, r.think_ms)


def compare(results: list[RunResult]) -> None:
    """Each figure of this tree over the same figure of the baseline tree,
    measured in the same invocation on the same machine."""
    base = {_key(r): r for r in results if r.tree == "baseline"}
    pairs = [
        (r, base[_key(r)]) for r in results if r.tree == "this" and _key(r) in base
    ]
    if not pairs:
        return
    print()
    print(
        "== this tree / baseline tree (same run, same machine; labels/s: higher is "
        "better, latencies and statements: lower is better)"
    )
    print(
        f"   {'path':>7} {'pairs':>10} {'users':>5} {'think':>6} {'labels/s':>15} "
        f"{'next p50':>17} {'p95':>17} {'p99':>17} {'stmts/label':>15} {'CPU ms/label':>15}"
    )

    def cell(new: float, old: float, digits: int = 1) -> str:
        ratio = new / old if old and not math.isnan(old) else math.nan
        return f"{new:.{digits}f}/{old:.{digits}f}={ratio:.2f}"

    for r, b in pairs:
        per_label = r.statements / r.labels if r.labels else math.nan
        base_per_label = b.statements / b.labels if b.labels else math.nan
        print(
            f"   {r.path:>7} {r.size:>10,} {r.annotators:>5} {r.think_ms:>6.0f} "
            f"{cell(r.labels_per_s, b.labels_per_s):>15} "
            f"{cell(pct(r.next_ms, 50), pct(b.next_ms, 50)):>17} "
            f"{cell(pct(r.next_ms, 95), pct(b.next_ms, 95)):>17} "
            f"{cell(pct(r.next_ms, 99), pct(b.next_ms, 99)):>17} "
            f"{cell(per_label, base_per_label):>15} "
            f"{cell(r.cpu_ms_per_label, b.cpu_ms_per_label):>15}"
        )


def _served(r: RunResult) -> list[float]:
    """Server times of the requests an annotator waits on: next/ (or the
    page's start) and the submits (which bring the next pair)."""
    return r.server["next"] + r.server["submit"]
