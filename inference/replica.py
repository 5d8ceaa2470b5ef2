"""What a replica shares with the router in front of it (``inference.router``):
the shared secret, the headers they exchange, the replica's name and how busy
it is.

A request the router forwards carries the secret in ``X-Arbiter-Router``.
The router has counted it against the token's rate limit already, so the
replica does not count it again, and it carries ``X-Arbiter-Route-Seed``:
the seed of the random draws with which the router routed a campaign alias
(canary or A/B arm, traffic sample), so that the replica, routing the same
name with the same seed over the same deployment, picks the same version
the router chose the replica for. Nothing here imports torch: the router
imports this module too.
"""

from __future__ import annotations

import os
import random
import socket
import threading

from django.utils.crypto import constant_time_compare, salted_hmac

from inference.conf import setting

ROUTER_HEADER = "X-Arbiter-Router"
SEED_HEADER = "X-Arbiter-Route-Seed"
REPLICA_HEADER = "X-Arbiter-Replica"
STATUS_PATH = "/internal/status"


def replica_secret() -> str:
    """``ARBITER_INFERENCE_REPLICA_SECRET``, or one derived from the
    product's ``SECRET_KEY`` (every process of a deployment has the same)."""
    configured = setting("ARBITER_INFERENCE_REPLICA_SECRET")
    if configured:
        return str(configured)
    return salted_hmac("arbiter.inference.replica", "router").hexdigest()


def secret_matches(value: str) -> bool:
    return bool(value) and constant_time_compare(value, replica_secret())


def replica_id() -> str:
    """This replica's name in ``X-Arbiter-Replica`` and its status."""
    return setting("ARBITER_INFERENCE_REPLICA_ID") or (
        f"{socket.gethostname()}-{os.getpid()}"
    )


def route_rng(seed: str) -> random.Random | None:
    """The router's draws for one request (None: draw afresh)."""
    try:
        return random.Random(int(seed))
    except ValueError:
        return None


class Activity:
    """Completions this process is answering now (streams until their last
    event): the load a router balances on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.answered = 0
        self._base: tuple[object | None, str] = (None, "")

    def note_base(self, engine: object, name: str) -> None:
        """The engine now loaded serves the base ``name`` (``base-<id>``)."""
        self._base = (engine, name)

    def base_of(self, engine: object) -> str | None:
        held, name = self._base
        return name if held is engine else None

    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
            self.answered += 1


activity = Activity()
