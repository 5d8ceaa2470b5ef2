"""Shared fixtures: users per role, API clients, and real Celery workers.

The database is the embedded (or configured) PostgreSQL, started by the
``core.testing.embedded`` plugin before Django loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.contrib.auth.models import AbstractUser
from django.core.management.base import CommandError
from django.test import TransactionTestCase
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from core.services import roles_ensure, user_create

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"

_flush_after_test = TransactionTestCase._fixture_teardown


def _flush_after_test_outlasting_workers(self: TransactionTestCase) -> None:
    """A transactional test's flush (one TRUNCATE of every table) can meet a
    task the real workers are still running for it: the TRUNCATE and the
    task's writes then deadlock, PostgreSQL aborts one, and a failed flush
    leaves the test's rows for the next test. The task ends within moments,
    so the flush is tried again before it counts as failed."""
    for attempt in range(5):
        try:
            return _flush_after_test(self)
        except CommandError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


TransactionTestCase._fixture_teardown = _flush_after_test_outlasting_workers  # type: ignore[method-assign]


@pytest.fixture(scope="session", autouse=True)
def _shared_cache_emptied() -> None:
    """Forget the sessions and users an earlier run cached in Redis: this
    run's new database gives the same ids to other users."""
    from django.conf import settings
    from django.core.cache import caches

    if "shared" not in settings.CACHES:
        return
    cache = caches["shared"]
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    for key in client.scan_iter(match=f"{cache.key_prefix}:*", count=1000):
        client.delete(key)


@pytest.fixture
def make_user(db: None) -> Any:
    counter = {"n": 0}

    def make(role: str = ANNOTATOR, username: str | None = None) -> AbstractUser:
        counter["n"] += 1
        return user_create(
            username=username or f"{role}{counter['n']}", password=PASSWORD, role=role
        )

    roles_ensure()
    return make


@pytest.fixture
def annotator(make_user: Any) -> AbstractUser:
    return make_user(ANNOTATOR)


@pytest.fixture
def reviewer(make_user: Any) -> AbstractUser:
    return make_user(REVIEWER)


@pytest.fixture
def admin_user(make_user: Any) -> AbstractUser:
    return make_user(ADMIN)


@pytest.fixture
def api_client_for() -> Any:
    def make(user: AbstractUser | None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


def _test_database_url() -> str:
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture(scope="session")
def celery_worker_env(django_db_setup: None, django_db_blocker: Any) -> dict[str, str]:
    env = dict(os.environ)
    with django_db_blocker.unblock():
        env["DATABASE_URL"] = _test_database_url()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["DJANGO_CONN_MAX_AGE"] = "0"
    return env


@pytest.fixture(scope="session")
def celery_workers(
    celery_worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Real Celery workers (default and gpu queues) in subprocesses, on the
    real broker, against the test database. Tests that use them need
    ``transaction=True`` so the workers see committed rows."""
    log_dir = tmp_path_factory.mktemp("celery")
    celery = str(Path(sys.executable).parent / "celery")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    for queue, concurrency in (("default", "2"), ("gpu", "1")):
        logs[queue] = log_dir / f"{queue}.log"
        procs[queue] = subprocess.Popen(
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                queue,
                "-n",
                f"test-{queue}@%h",
                "--concurrency",
                concurrency,
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--logfile",
                str(logs[queue]),
            ],
            env=celery_worker_env,
            cwd=ROOT,
            start_new_session=True,
        )
    from config.celery import app

    deadline = time.monotonic() + 60
    while True:
        replies = app.control.ping(timeout=1.0) or []
        names = {name for reply in replies for name in reply}
        if any(n.startswith("test-default@") for n in names) and any(
            n.startswith("test-gpu@") for n in names
        ):
            break
        if time.monotonic() > deadline or any(
            p.poll() is not None for p in procs.values()
        ):
            for p in procs.values():
                p.kill()
            raise RuntimeError(
                "Celery workers did not start: "
                + " ".join(p.read_text() for p in logs.values() if p.exists())
            )
        time.sleep(0.3)
    yield {"processes": procs, "logs": logs, "env": celery_worker_env}
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


SUBJECTS = [
    "cat",
    "river",
    "garden",
    "teacher",
    "robot",
    "city",
    "storm",
    "friend",
    "song",
    "train",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and its tokenizer, built locally (no download)."""
    from ml.tiny import build_tiny_model

    texts = [
        f"tell me about the {s} . the {s} answers kindly . the {s} answers rudely ."
        for s in SUBJECTS
    ]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", extra_text=texts)


@pytest.fixture
def tiny_base(tiny_model_dir: Path, db: None) -> Any:
    """The tiny random Llama registered as the default base model."""
    from models_hub.models import BaseModelVersion

    # migrate registers the built-in default; this tiny model replaces it.
    BaseModelVersion.objects.filter(is_default=True).update(is_default=False)
    return BaseModelVersion.objects.create(
        name="tiny-llama", source=str(tiny_model_dir), is_default=True
    )


@pytest.fixture
def celery_beat(
    celery_workers: dict[str, Any], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Real Celery beat with the product's schedule, its loop tick shortened
    to 2 s, sending to the real workers. The loop's automatic steps
    (training thresholds, bootstrap rounds, promotions) then happen as in
    production, with no call from the test."""
    env = {**celery_workers["env"], "ARBITER_LOOP_TICK_SECONDS": "2"}
    log = tmp_path / "beat.log"
    beat = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "config",
            "beat",
            "--schedule",
            str(tmp_path / "celerybeat-schedule"),
            "--loglevel",
            "INFO",
            "--logfile",
            str(log),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    yield beat
    beat.terminate()
    try:
        beat.wait(20)
    except subprocess.TimeoutExpired:
        beat.kill()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[Any]:
    """A real S3 server (SeaweedFS, ``core.testing.seaweedfs``) for the tests
    of object storage, started once on free loopback ports with its data
    under the test data dir, and stopped (its data removed) at the end."""
    from core.testing.seaweedfs import seaweedfs_start

    data_dir = Path(os.environ["ARBITER_DATA_DIR"]) / "seaweedfs" / str(os.getpid())
    server = seaweedfs_start(data_dir)
    yield server
    server.stop()
