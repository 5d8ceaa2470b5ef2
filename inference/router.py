"""The router in front of several inference replicas: the product's ``/v1``
address when ``ARBITER_INFERENCE_REPLICAS`` lists replica URLs.

    gunicorn inference.router:application --env DJANGO_SETTINGS_MODULE=inference.settings \\
        --workers 1 --worker-class gthread --threads 64

One process (many threads): the token's rate limit is counted here, once, in
this process's memory, and the replicas do not count what the router sends
them (``X-Arbiter-Router`` carries the shared secret). For each completion
the router checks the token, the body and the model name as a replica would
(the same errors in the same order: 401, 429, 400, 404), resolves the name
to the version that will answer (an alias's canary or A/B arm drawn here,
with a seed the replica reuses, so its sticky and random routing is
unchanged), and forwards the request unchanged to a replica that holds the
version or, failing that, to the least busy one (``inference.pool``). The
replica records the answer as it does without a router. ``GET /v1/models``
is checked here and answered by any replica; other paths are passed on.

The router imports no torch and loads no model.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import DatabaseError, close_old_connections, connections  # noqa: E402

from core.artifacts import ArtifactError  # noqa: E402
from core.exceptions import NotFound  # noqa: E402
from core.unavailable import RETRY_AFTER_SECONDS, database_unavailable  # noqa: E402
from inference.access import caller_for  # noqa: E402
from inference.conf import setting  # noqa: E402
from inference.errors import (  # noqa: E402
    InferenceError,
    artifacts_unavailable,
    error_body,
)
from inference.parsing import parse_chat, parse_completion, parse_json  # noqa: E402
from inference.pool import HOP_BY_HOP, PoolSettings, ReplicaPool  # noqa: E402
from inference.replica import (  # noqa: E402
    ROUTER_HEADER,
    SEED_HEADER,
    STATUS_PATH,
    replica_secret,
    secret_matches,
)
from models_hub.services.serving import serving_route  # noqa: E402

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
PARSERS = {"/v1/chat/completions": parse_chat, "/v1/completions": parse_completion}
# Headers a caller may not set on the way to a replica.
INTERNAL = frozenset({ROUTER_HEADER.lower(), SEED_HEADER.lower(), "content-length"})


def pool_from_settings() -> ReplicaPool:
    urls = [u for u in setting("ARBITER_INFERENCE_REPLICAS").split(",") if u.strip()]
    return ReplicaPool(
        urls,
        PoolSettings(
            secret=replica_secret(),
            secret_header=ROUTER_HEADER,
            status_path=STATUS_PATH,
            connect_timeout=setting("ARBITER_INFERENCE_REPLICA_CONNECT_TIMEOUT"),
            timeout=setting("ARBITER_INFERENCE_REPLICA_TIMEOUT"),
            down_seconds=setting("ARBITER_INFERENCE_REPLICA_DOWN_SECONDS"),
            probe_seconds=setting("ARBITER_INFERENCE_REPLICA_PROBE_SECONDS"),
            spill=setting("ARBITER_INFERENCE_REPLICA_SPILL"),
        ),
    )


class Router:
    """The WSGI application."""

    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        self.pool.start()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/health" and method == "GET":
            return self._health(start_response)
        if path == STATUS_PATH and method == "GET":
            if not secret_matches(_header(environ, ROUTER_HEADER)):
                return _error(start_response, _unknown_path(path))
            return _json(start_response, 200, {"replicas": self.pool.snapshot()})
        try:
            body = _body(environ)
            version, seed = self._admit(environ, method, path, body)
        except InferenceError as error:
            return _error(start_response, error)
        headers = _forwarded_headers(environ)
        if seed is not None:
            headers[SEED_HEADER] = str(seed)
        answer = self.pool.forward(
            method=method,
            path=_target(environ),
            body=body,
            headers=headers,
            version=version,
        )
        if answer is None:
            return _error(
                start_response,
                InferenceError(
                    "No inference replica is answering; try again in a few seconds.",
                    status=503,
                    type="server_error",
                    code="service_unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ),
            )
        start_response(f"{answer.status} {answer.reason}", answer.headers)
        return answer

    def _admit(
        self, environ: Mapping[str, Any], method: str, path: str, body: bytes
    ) -> tuple[str | None, int | None]:
        """Token, rate limit, body and model name, as a replica checks them;
        the version that will answer and the seed of its draws (None: a
        request that any replica answers)."""
        parse = PARSERS.get(path) if method == "POST" else None
        if parse is None and not (method == "GET" and _is_models(path)):
            return None, None
        close_old_connections()
        try:
            caller_for(_header(environ, "Authorization"), count=True)
            if parse is None:
                return None, None
            parsed = parse(parse_json(body))
            seed = random.getrandbits(63)
            try:
                route = serving_route(
                    name=parsed.model, user=parsed.user, rng=random.Random(seed)
                )
            except NotFound as error:
                raise InferenceError(
                    error.message, status=404, param="model", code="model_not_found"
                ) from None
            except ArtifactError as error:
                raise artifacts_unavailable(parsed.model, error) from None
            return route.version.name, seed
        except DatabaseError as error:
            if not database_unavailable(error):
                logger.exception("inference.router.crashed path=%s", path)
                raise InferenceError(
                    "The inference router failed on this request; it was logged.",
                    status=500,
                    type="server_error",
                    code="internal_error",
                ) from None
            raise InferenceError(
                "The database is restarting or unreachable; try again in a few "
                "seconds.",
                status=503,
                type="server_error",
                code="service_unavailable",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        finally:
            # This thread may relay a stream for minutes next: hold no
            # database connection meanwhile (64 threads, 64 idle connections).
            connections.close_all()

    def _health(self, start_response: StartResponse) -> Iterable[bytes]:
        """Liveness: 200 while at least one replica answers (no token)."""
        replicas = self.pool.snapshot()
        up = sum(1 for r in replicas if r["up"])
        return _json(
            start_response,
            200 if up else 503,
            {"status": "ok" if up else "down", "replicas": len(replicas), "up": up},
        )


def _is_models(path: str) -> bool:
    return path == "/v1/models" or path.startswith("/v1/models/")


def _header(environ: Mapping[str, Any], name: str) -> str:
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))


def _body(environ: Mapping[str, Any]) -> bytes:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream = environ["wsgi.input"]
    try:
        length = max(int(environ.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        length = 0
    # Refused before reading: the body is buffered whole, before the token
    # is checked.
    data = b"" if length > limit else stream.read(length or limit + 1)
    if length > limit or len(data) > limit:
        raise InferenceError(
            f"The request body is over {limit} bytes.",
            status=413,
            code="request_too_large",
        )
    return data


def _target(environ: Mapping[str, Any]) -> str:
    raw = environ.get("RAW_URI")  # gunicorn: the path as the client sent it
    if raw:
        return str(raw)
    path = quote(environ.get("PATH_INFO", "") or "/", safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _forwarded_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The caller's headers for the replica (its Host included, so the
    replica's ALLOWED_HOSTS is the product's), less hop-by-hop ones."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key == "CONTENT_TYPE" and value:
            name = "Content-Type"
        else:
            continue
        if name.lower() in HOP_BY_HOP or name.lower() in INTERNAL:
            continue
        headers[name] = str(value)
    remote = environ.get("REMOTE_ADDR")
    if remote:
        prior = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {remote}" if prior else str(remote)
    return headers


def _unknown_path(path: str) -> InferenceError:
    return InferenceError(
        f"Unknown path {path}: this service answers /v1/models, "
        "/v1/chat/completions and /v1/completions.",
        status=404,
        code="unknown_url",
    )


def _json(
    start_response: StartResponse,
    status: int,
    data: Any,
    headers: Mapping[str, str] | None = None,
) -> Iterable[bytes]:
    payload = json.dumps(data).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *(headers or {}).items(),
        ],
    )
    return [payload]


def _error(start_response: StartResponse, error: InferenceError) -> Iterable[bytes]:
    return _json(start_response, error.status, error_body(error), error.headers)


application = Router(pool_from_settings())
