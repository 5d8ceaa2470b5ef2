"""Run the whole product on one machine: embedded PostgreSQL and Redis (unless
DATABASE_URL / CELERY_BROKER_URL are set), migrations, demo data, the web
server, a Celery worker per queue and Celery beat, kept running by
``core.supervisor`` (a crashed process is restarted with back-off while the
rest keeps serving). Ctrl-C stops everything in order; the data under .data/
persists for the next start.

    python -m core.launch demo [--host 127.0.0.1] [--port 8000] [--inference-replicas N]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.embedded import BASE_DIR, default_data_dir, ensure_services
from core.supervisor import Supervisor

logger = logging.getLogger("arbiter.launch")


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        check=True,
        cwd=BASE_DIR,
    )


def prepare(*, data_dir: Path, host: str, seed: bool) -> tuple[Any, dict[str, str]]:
    """Start (or reuse) the embedded servers under ``data_dir``, migrate,
    collect static files and, with ``seed``, load the demo data. Returns the
    services handle and the environment the product's processes run in."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    services = ensure_services(data_dir)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("DJANGO_ALLOWED_HOSTS", f"localhost,127.0.0.1,[::1],{host}")
    _manage("migrate", "--no-input", env=env)
    _manage("collectstatic", "--no-input", "-v", "0", env=env)
    if seed:
        _manage("seed_demo", env=env)
    return services, env


def product_processes(
    *, host: str, port: int, data_dir: Path, inference_replicas: int | None = None
) -> list[tuple[str, list[str]]]:
    """The product's long-running processes, in start (and stop) order: web
    first, then beat, then a worker per queue, then the inference API (one
    process, many threads: one loaded base answers every request) on
    ``ARBITER_INFERENCE_PORT`` (default 8001), bound like the web.

    With ``inference_replicas`` N >= 1 (default: ``ARBITER_INFERENCE_LOCAL_REPLICAS``,
    else 0), the inference API is N replicas on the loopback ports after
    ``ARBITER_INFERENCE_PORT`` and the router (``inference.router``) in
    front of them on ``ARBITER_INFERENCE_PORT``."""
    bin_dir = Path(sys.executable).parent
    worker = [str(bin_dir / "celery"), "-A", "config", "worker", "--loglevel", "INFO"]
    inference_port = inference_port_from_env()
    if inference_replicas is None:
        inference_replicas = inference_replicas_from_env()
    return [
        *_core_processes(
            host=host, port=port, data_dir=data_dir, bin_dir=bin_dir, worker=worker
        ),
        *inference_processes(
            host=host,
            port=inference_port,
            replicas=inference_replicas,
            gunicorn=str(bin_dir / "gunicorn"),
        ),
    ]


def inference_processes(
    *, host: str, port: int, replicas: int, gunicorn: str, preload: bool = True
) -> list[tuple[str, list[str]]]:
    """The inference API: one process on ``host:port`` (``replicas`` 0), or
    ``replicas`` processes on 127.0.0.1 at ``port + 1``... and the router on
    ``host:port`` (replicas first, so the router finds them). Each loads the
    default base as it starts (``preload``)."""
    single = [
        gunicorn,
        "inference.wsgi",
        "--env",
        "DJANGO_SETTINGS_MODULE=inference.settings",
        "--bind",
        f"{host}:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "16",
        "--access-logfile",
        "-",
        "--env",
        f"ARBITER_INFERENCE_PRELOAD={int(preload)}",
    ]
    if replicas < 1:
        return [("inference", single)]
    processes = []
    urls = []
    for number in range(1, replicas + 1):
        replica_port = port + number
        urls.append(f"http://127.0.0.1:{replica_port}")
        command = [
            *single[:5],
            f"127.0.0.1:{replica_port}",
            *single[6:],
            "--env",
            f"ARBITER_INFERENCE_REPLICA_ID=replica-{number}",
        ]
        processes.append((f"inference-{number}", command))
    router = [
        gunicorn,
        "inference.router:application",
        "--env",
        "DJANGO_SETTINGS_MODULE=inference.settings",
        "--env",
        f"ARBITER_INFERENCE_REPLICAS={','.join(urls)}",
        "--bind",
        f"{host}:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        # a streamed answer holds a thread for as long as it streams
        "--threads",
        "64",
        "--access-logfile",
        "-",
    ]
    return [*processes, ("inference-router", router)]


def inference_replicas_from_env() -> int:
    return int(os.environ.get("ARBITER_INFERENCE_LOCAL_REPLICAS", "0") or 0)


def _core_processes(
    *, host: str, port: int, data_dir: Path, bin_dir: Path, worker: list[str]
) -> list[tuple[str, list[str]]]:
    celery = str(bin_dir / "celery")
    return [
        (
            "web",
            [
                str(bin_dir / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
        ),
        (
            "beat",
            [
                celery,
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(data_dir / "celerybeat-schedule"),
            ],
        ),
        (
            "worker-default",
            [*worker, "-Q", "default", "-n", "default@%h", "--concurrency", "2"],
        ),
        (
            "worker-gpu",
            [
                *worker,
                # gpu-multi too: on one machine the gpu worker is also the one
                # that runs jobs of several processes (its GPUs, or CPU cores
                # without one), one job at a time (core.workers).
                "-Q",
                "gpu,gpu-multi",
                "-n",
                "gpu@%h",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
            ],
        ),
    ]


def inference_port_from_env() -> int:
    return int(os.environ.get("ARBITER_INFERENCE_PORT", "8001"))


def demo(host: str, port: int, inference_replicas: int | None = None) -> int:
    data_dir = default_data_dir()
    print(f"Arbiter: data in {data_dir}")
    services, env = prepare(data_dir=data_dir, host=host, seed=True)
    supervisor = Supervisor(
        product_processes(
            host=host,
            port=port,
            data_dir=data_dir,
            inference_replicas=inference_replicas,
        ),
        env=env,
        cwd=BASE_DIR,
        say=print,
    )
    supervisor.start()
    print(f"\nArbiter is running at http://{host}:{port}/  (Ctrl-C stops everything)")
    print(
        f"Inference API (OpenAI-compatible): http://{host}:{inference_port_from_env()}/v1\n"
    )

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        supervisor.poll()
        time.sleep(0.5)

    print("\nStopping Arbiter…")
    supervisor.stop()
    services.stop()
    print("Stopped. Data kept in", data_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.launch")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run the whole product")
    demo_parser.add_argument(
        "--host", default=os.environ.get("ARBITER_HOST", "127.0.0.1")
    )
    demo_parser.add_argument(
        "--port", type=int, default=int(os.environ.get("ARBITER_PORT", "8000"))
    )
    demo_parser.add_argument(
        "--inference-replicas",
        type=int,
        default=None,
        metavar="N",
        help="run the inference API as N replicas behind a router "
        "(default: ARBITER_INFERENCE_LOCAL_REPLICAS, else 0: one process)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "demo":
        return demo(args.host, args.port, args.inference_replicas)
    return 2


if __name__ == "__main__":
    sys.exit(main())
