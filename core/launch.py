"""Run the whole product on one machine: embedded PostgreSQL and Redis (unless
DATABASE_URL / CELERY_BROKER_URL are set), migrations, demo data, the web
server, a Celery worker per queue and Celery beat. Ctrl-C stops everything
in order; the data under .data/ persists for the next start.

    python -m core.launch demo [--host 127.0.0.1] [--port 8000]
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

from core.embedded import BASE_DIR, default_data_dir, ensure_services

logger = logging.getLogger("arbiter.launch")


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        check=True,
        cwd=BASE_DIR,
    )


def _spawn(
    name: str, args: list[str], env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    print(f"  starting {name}: {' '.join(args)}")
    # Own session: the terminal's Ctrl-C reaches only the launcher, which then
    # stops the children in order (web first, workers get a warm shutdown).
    return subprocess.Popen(args, env=env, cwd=BASE_DIR, start_new_session=True)


def demo(host: str, port: int) -> int:
    data_dir = default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    print(f"Arbiter: data in {data_dir}")
    services = ensure_services(data_dir)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("DJANGO_ALLOWED_HOSTS", f"localhost,127.0.0.1,[::1],{host}")
    _manage("migrate", "--no-input", env=env)
    _manage("collectstatic", "--no-input", "-v", "0", env=env)
    _manage("seed_demo", env=env)

    bin_dir = Path(sys.executable).parent
    celery = str(bin_dir / "celery")
    processes = {
        "web": _spawn(
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
            env,
            data_dir,
        ),
        "worker-default": _spawn(
            "worker-default",
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                "default",
                "-n",
                "default@%h",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
            env,
            data_dir,
        ),
        "worker-gpu": _spawn(
            "worker-gpu",
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                "gpu",
                "-n",
                "gpu@%h",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "INFO",
            ],
            env,
            data_dir,
        ),
        "beat": _spawn(
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
            env,
            data_dir,
        ),
    }
    print(f"\nArbiter is running at http://{host}:{port}/  (Ctrl-C stops everything)\n")

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for name, proc in processes.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping Arbiter.")
                stopping, exit_code = True, 1
                break
        time.sleep(0.5)

    print("\nStopping Arbiter…")
    for name in ("web", "beat", "worker-default", "worker-gpu"):
        proc = processes[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for name, proc in processes.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it.")
            proc.kill()
    services.stop()
    print("Stopped. Data kept in", data_dir)
    return exit_code


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "demo":
        return demo(args.host, args.port)
    return 2


if __name__ == "__main__":
    sys.exit(main())
