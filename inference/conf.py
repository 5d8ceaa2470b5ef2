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
}


def setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
