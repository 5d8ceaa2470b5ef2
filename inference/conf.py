"""The inference process's settings and their defaults, read at call time
(``inference/settings.py`` sets them from the environment; a process on
``config.settings``, such as the test suite, gets the defaults)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Requests per API token: <count>/<second|minute|hour|day>, or "off".
    "ARBITER_INFERENCE_RATE_LIMIT": "120/minute",
    # Adapters kept attached to the loaded base (least recently used evicted).
    "ARBITER_INFERENCE_MAX_ADAPTERS": 8,
    # Merged exports kept loaded (each is a full model).
    "ARBITER_INFERENCE_MAX_MERGED": 1,
    # Rows decoded together; requests of different versions share a batch.
    "ARBITER_INFERENCE_MAX_BATCH": 16,
    # How long a new batch waits for more requests to join it.
    "ARBITER_INFERENCE_BATCH_WAIT_MS": 5.0,
    # max_tokens when a request names none (capped by the context left).
    "ARBITER_INFERENCE_DEFAULT_MAX_TOKENS": 256,
    # Sampled requests waiting for the other version's answer; past it a
    # request is not sampled (the API's own answers come first).
    "ARBITER_INFERENCE_SAMPLING_BACKLOG": 32,
    # Load the default base when the process starts (inference.wsgi), not on
    # the first request; ./arbiter demo and compose turn it on.
    "ARBITER_INFERENCE_PRELOAD": False,
    # Replicas behind the router (inference.router): their base URLs,
    # comma-separated. Empty: one inference process, no router.
    "ARBITER_INFERENCE_REPLICAS": "",
    # Shared by the router and its replicas (X-Arbiter-Router); empty:
    # derived from DJANGO_SECRET_KEY.
    "ARBITER_INFERENCE_REPLICA_SECRET": "",
    # This replica's name in X-Arbiter-Replica; empty: <host>-<pid>.
    "ARBITER_INFERENCE_REPLICA_ID": "",
    # Seconds the router waits for a replica to connect, and for its answer
    # to start (or for the next piece of a stream).
    "ARBITER_INFERENCE_REPLICA_CONNECT_TIMEOUT": 3.0,
    "ARBITER_INFERENCE_REPLICA_TIMEOUT": 300.0,
    # A replica that failed is left out this long, then probed again; every
    # replica's status is read this often.
    "ARBITER_INFERENCE_REPLICA_DOWN_SECONDS": 10.0,
    "ARBITER_INFERENCE_REPLICA_PROBE_SECONDS": 2.0,
    # A version goes to a replica holding it unless that one has this many
    # more requests in flight than the least busy replica (which then loads it).
    "ARBITER_INFERENCE_REPLICA_SPILL": 8,
}


def setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
