"""Settings of the inference process: the product's settings (database,
storage, logging, security) with the inference API's URLs and a lean
middleware stack (no sessions, CSRF or login pages: callers send an API
token). ``DJANGO_SETTINGS_MODULE=inference.settings``."""

from __future__ import annotations

from config.settings import *  # noqa: F403
from config.settings import env
from inference.conf import DEFAULTS

ROOT_URLCONF = "inference.urls"
WSGI_APPLICATION = "inference.wsgi.application"
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
]
# Paths have no trailing slash (/v1/models), as OpenAI's clients call them.
APPEND_SLASH = False

ARBITER_INFERENCE_RATE_LIMIT = env.str(
    "ARBITER_INFERENCE_RATE_LIMIT",
    default=DEFAULTS["ARBITER_INFERENCE_RATE_LIMIT"],
)
ARBITER_INFERENCE_MAX_ADAPTERS = env.int(
    "ARBITER_INFERENCE_MAX_ADAPTERS",
    default=DEFAULTS["ARBITER_INFERENCE_MAX_ADAPTERS"],
)
ARBITER_INFERENCE_MAX_MERGED = env.int(
    "ARBITER_INFERENCE_MAX_MERGED",
    default=DEFAULTS["ARBITER_INFERENCE_MAX_MERGED"],
)
ARBITER_INFERENCE_MAX_BATCH = env.int(
    "ARBITER_INFERENCE_MAX_BATCH",
    default=DEFAULTS["ARBITER_INFERENCE_MAX_BATCH"],
)
ARBITER_INFERENCE_BATCH_WAIT_MS = env.float(
    "ARBITER_INFERENCE_BATCH_WAIT_MS",
    default=DEFAULTS["ARBITER_INFERENCE_BATCH_WAIT_MS"],
)
ARBITER_INFERENCE_DEFAULT_MAX_TOKENS = env.int(
    "ARBITER_INFERENCE_DEFAULT_MAX_TOKENS",
    default=DEFAULTS["ARBITER_INFERENCE_DEFAULT_MAX_TOKENS"],
)
ARBITER_INFERENCE_SAMPLING_BACKLOG = env.int(
    "ARBITER_INFERENCE_SAMPLING_BACKLOG",
    default=DEFAULTS["ARBITER_INFERENCE_SAMPLING_BACKLOG"],
)
