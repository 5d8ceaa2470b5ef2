"""The load generator: one thread and one keep-alive connection per
simulated annotator, labeling in a loop through the REST API or the page.

REST (``path="api"``): ``POST .../next/`` for the first pair, then for each
label ``POST .../leases/<id>/preference/?next=1`` (in a rank campaign,
``.../ranking/?next=1`` with a random ranking); a server that answers
without ``next`` (a tree before it existed) gets the separate ``next/`` call.
Browser (``path="browser"``): a session cookie and a CSRF token, then the
htmx posts of the labeling page: "start" for the first card, then each submit,
which answers with the next card (its lease id is in ``HX-Push-Url``).

The next-pair latency of a label is what the annotator waits for between
sending the answer and having the next pair: the submit (and, where the
server needs it, the separate next/ call) as the client sees it.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

CHOICES = ("left", "right", "tie", "both_bad")
_PUSHED_LEASE = re.compile(r"/label/(\d+)/$")


@dataclass
class Sample:
    start: float  # when the request that brought a pair was sent
    next_s: float  # until that pair was received (the annotator's wait)
    submit_start: float | None = None  # when the answer was sent (labels only)
    submit_s: float | None = None  # the submit request alone


@dataclass
class Annotator:
    user_id: int
    token: str
    session_key: str = ""
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    empty: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def think_seconds(rng: random.Random, think_ms: float, dist: str) -> float:
    """A pause with mean ``think_ms``: exponential (people's pauses: many
    short, a few long) or uniform ±50 % (the original generator)."""
    if think_ms <= 0:
        return 0.0
    if dist == "exp":
        return rng.expovariate(1000.0 / think_ms)
    return rng.uniform(0.5, 1.5) * think_ms / 1000


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read(), resp
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise


def annotator_loop(
    a: Annotator,
    port: int,
    campaign_id: int,
    think_ms: float,
    stop_at: float,
    start: threading.Barrier,
    path: str = "api",
    dist: str = "exp",
    rank_k: int = 0,
) -> None:
    """``rank_k`` > 0: a rank campaign of ``rank_k`` completions per
    comparison; each answer is a ranking (random, ties included) posted to
    ``leases/<id>/ranking/?next=1`` (REST only)."""
    rng = random.Random(a.user_id)
    conn = _Conn(port)
    if path == "browser":
        csrf = "".join(
            rng.choice("abcdefghijkmnopqrstuvwxyz0123456789") for _ in range(32)
        )
        headers = {
            "Cookie": f"sessionid={a.session_key}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
            "HX-Request": "true",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        first_path = f"/campaigns/{campaign_id}/label/"
    else:
        headers = {
            "Authorization": f"Token {a.token}",
            "Content-Type": "application/json",
        }
        first_path = f"/api/v1/campaigns/{campaign_id}/next/"

    def lease_next() -> int | None:
        """The separate request for a pair: the first one, or after a submit
        that did not bring one. Records its sample."""
        t0 = time.monotonic()
        try:
            status, body, resp = conn.call(first_path, b"", headers)
        except (OSError, http.client.HTTPException) as exc:
            a.error(f"next:{type(exc).__name__}")
            return None
        t1 = time.monotonic()
        lease_id = _lease_of(path, status, body, resp)
        if status == 204 or (status == 200 and lease_id is None):
            a.empty += 1
            a.samples.append(Sample(t0, t1 - t0))
            time.sleep(0.1)
            return None
        if status != 200:
            a.error(f"next:{status}")
            time.sleep(0.05)
            return None
        a.samples.append(Sample(t0, t1 - t0))
        return lease_id

    start.wait()
    # Spread the first requests over 200 ms, like people arriving.
    time.sleep(rng.random() * 0.2)
    lease_id: int | None = None
    while time.monotonic() < stop_at:
        if lease_id is None:
            lease_id = lease_next()
            continue
        pause = think_seconds(rng, think_ms, dist)
        if pause:
            time.sleep(pause)
        choice = rng.choice(CHOICES)
        if path == "browser":
            body = urllib.parse.urlencode(
                {
                    "choice": choice,
                    "client_request_id": f"{a.user_id}-{lease_id}",
                    "time_spent_ms": int(pause * 1000),
                }
            ).encode()
            submit_path = f"/campaigns/{campaign_id}/label/{lease_id}/submit/"
        elif rank_k:
            body = json.dumps(
                {
                    "ranks": [rng.randint(1, rank_k) for _ in range(rank_k)],
                    "none_acceptable": rng.random() < 0.1,
                    "time_spent_ms": int(pause * 1000),
                }
            ).encode()
            submit_path = f"/api/v1/leases/{lease_id}/ranking/?next=1"
        else:
            body = json.dumps(
                {"choice": choice, "time_spent_ms": int(pause * 1000)}
            ).encode()
            submit_path = f"/api/v1/leases/{lease_id}/preference/?next=1"
        t2 = time.monotonic()
        try:
            status, answer, resp = conn.call(submit_path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            a.error(f"submit:{type(exc).__name__}")
            lease_id = None
            continue
        t3 = time.monotonic()
        created = status == 201 or (path == "browser" and status == 200)
        if not created and status != 200:
            a.error(f"submit:{status}")
            lease_id = None
            continue
        following = _lease_of(path, status, answer, resp)
        brought_pair = path == "browser" or _has_next(answer)
        if brought_pair:
            if following is None:
                a.empty += 1
            if created:
                a.samples.append(Sample(t2, t3 - t2, t2, t3 - t2))
            lease_id = following
            if following is None:
                time.sleep(0.1)
            continue
        # An API without ?next: the pair is a second round trip.
        before = len(a.samples)
        lease_id = lease_next()
        if created:
            waited = a.samples.pop() if len(a.samples) > before else None
            end = waited.start + waited.next_s if waited else t3
            a.samples.append(Sample(t2, end - t2, t2, t3 - t2))


def _has_next(body: bytes) -> bool:
    try:
        return "next" in json.loads(body)
    except ValueError:
        return False


def _lease_of(
    path: str, status: int, body: bytes, resp: http.client.HTTPResponse
) -> int | None:
    if status not in (200, 201):
        return None
    if path == "browser":
        match = _PUSHED_LEASE.search(resp.getheader("HX-Push-Url") or "")
        return int(match.group(1)) if match else None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if "next" in data:
        data = data["next"] or {}
    lease = data.get("lease_id")
    return int(lease) if lease is not None else None
