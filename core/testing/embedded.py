"""pytest plugin: real PostgreSQL and Redis for the test session.

Loaded with ``-p core.testing.embedded`` (see ``pyproject.toml``). It runs
before pytest-django reads the settings, so a bare ``pytest`` on a fresh
machine gets its own servers under ``.data/test`` while a developer who
exports ``DATABASE_URL``/``CELERY_BROKER_URL`` gets theirs.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

from core.embedded import BASE_DIR, EmbeddedServices, ensure_services

_services: EmbeddedServices | None = None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    global _services
    data_dir = Path(
        os.environ.get("ARBITER_TEST_DATA_DIR", BASE_DIR / ".data" / "test")
    )
    _services = ensure_services(data_dir)
    if "DATABASE_URL" in _services.env:
        _without_autovacuum(_services.env["DATABASE_URL"])
    os.environ.setdefault("DJANGO_DEBUG", "true")
    # Sessions and users the tests cache in Redis, apart from a dev server's
    # (the test database's ids start again at 1 on every run).
    os.environ.setdefault("ARBITER_CACHE_KEY_PREFIX", "arbiter-test")
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    yield


def _without_autovacuum(database_url: str) -> None:
    """Turn autovacuum off on the test server this plugin runs.

    Tests insert hundreds of rows inside one uncommitted transaction, which
    autovacuum cannot see: analysing between tests records "empty" tables,
    and PostgreSQL then plans joins over the uncommitted rows as nested loops
    over whole index scans (minutes where milliseconds are normal). Without
    statistics it falls back to its size heuristics, which plan sanely. A
    production server keeps autovacuum: its statistics follow its data.
    """
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET autovacuum = off")
        conn.execute("SELECT pg_reload_conf()")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()
