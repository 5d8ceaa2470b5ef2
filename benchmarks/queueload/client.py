"""The load generator: one thread and one keep-alive connection per
simulated annotator, looping next/ then preference/."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field

CHOICES = ("left", "right", "tie", "both_bad")


@dataclass
class Sample:
    start: float  # when next/ was sent
    next_s: float
    submit_start: float | None = None  # when preference/ was sent (201 only)
    submit_s: float | None = None


@dataclass
class Annotator:
    user_id: int
    token: str
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    empty: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def annotator_loop(
    a: Annotator,
    port: int,
    campaign_id: int,
    think_ms: float,
    stop_at: float,
    start: threading.Barrier,
) -> None:
    rng = random.Random(a.user_id)
    headers = {"Authorization": f"Token {a.token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    next_path = f"/api/v1/campaigns/{campaign_id}/next/"

    def call(path: str, body: bytes) -> tuple[int, bytes]:
        nonlocal conn
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            raise

    start.wait()
    # Spread the first requests over 200 ms, like people arriving.
    time.sleep(rng.random() * 0.2)
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            status, body = call(next_path, b"")
        except (OSError, http.client.HTTPException) as exc:
            a.error(f"next:{type(exc).__name__}")
            continue
        t1 = time.monotonic()
        if status == 204:
            a.empty += 1
            a.samples.append(Sample(t0, t1 - t0))
            time.sleep(0.1)
            continue
        if status != 200:
            a.error(f"next:{status}")
            time.sleep(0.05)
            continue
        lease_id = json.loads(body)["lease_id"]
        if think_ms > 0:
            time.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)
        payload = json.dumps(
            {"choice": rng.choice(CHOICES), "time_spent_ms": int(think_ms)}
        ).encode()
        t2 = time.monotonic()
        try:
            status, body = call(f"/api/v1/leases/{lease_id}/preference/", payload)
        except (OSError, http.client.HTTPException) as exc:
            a.error(f"submit:{type(exc).__name__}")
            continue
        t3 = time.monotonic()
        if status not in (200, 201):
            a.error(f"submit:{status}")
        if status == 201:
            a.samples.append(Sample(t0, t1 - t0, t2, t3 - t2))
        else:
            a.samples.append(Sample(t0, t1 - t0))
