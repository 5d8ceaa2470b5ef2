"""The database is unavailable: answer 503 with ``Retry-After``, never a 500.

While PostgreSQL restarts, shuts down or cannot be reached, a request fails
with a DB-API ``OperationalError`` or ``InterfaceError`` (Django wraps
psycopg's). Those say nothing about the request, so the client should simply
try again: the API answers ``503`` with its usual ``{"detail": ...}`` body and
pages a short "try again" page, both with ``Retry-After``, whether DEBUG is on
or off. Nothing is lost: a request that got a 503 wrote nothing (its
transaction rolled back with the connection), and labels are idempotent per
lease, so the client's retry stores each label once.

``DatabaseUnavailableMiddleware`` catches the error wherever it is raised:
in a view (``process_exception``; DRF views reach ``core.api``'s handler
first, which answers the same), and in another middleware, such as the
session lookup behind ``LoginRequiredMiddleware`` or the session save on the
way out, which Django turns into a 500 before an outer middleware sees it;
Django's ``got_request_exception`` signal marks those requests, and the
middleware replaces their 500. Once the server is back, the next request
works: ``CONN_HEALTH_CHECKS`` makes Django test a reused connection and open
a new one instead of failing on the one the restart closed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 3
MESSAGE = (
    "The database is restarting or unreachable; nothing was saved by this "
    "request. Try again in a few seconds."
)
_MARK = "_arbiter_database_unavailable"


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the
    database could not serve the request, as opposed to a bug or bad input."""
    import psycopg

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(
            exc,
            (
                OperationalError,
                InterfaceError,
                psycopg.OperationalError,
                psycopg.InterfaceError,
            ),
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 + Retry-After: JSON for the API, a short page for the rest.

    Renders without the request, so that no context processor touches the
    database that just failed."""
    if is_api_request(request):
        response: HttpResponse = JsonResponse({"detail": MESSAGE}, status=503)
    else:
        response = HttpResponse(
            render_to_string(
                "unavailable.html",
                {"message": MESSAGE, "retry_after": RETRY_AFTER_SECONDS},
            ),
            status=503,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def _mark_request(
    sender: Any, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """``got_request_exception`` receiver: remember that this request's 500
    came from an unavailable database (the exception is being handled)."""
    if request is not None and database_unavailable(sys.exc_info()[1]):
        setattr(request, _MARK, True)


class DatabaseUnavailableMiddleware:
    """Place it just inside ``SecurityMiddleware``/``WhiteNoiseMiddleware``
    and outside the session and auth middleware, whose database errors it
    must see."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        got_request_exception.connect(
            _mark_request, dispatch_uid="core.unavailable.mark_request"
        )

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, _MARK, False):
            logger.warning("core.database_unavailable path=%s", request.path_info)
            return unavailable_response(request)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if not database_unavailable(exception):
            return None
        logger.warning(
            "core.database_unavailable path=%s error=%s", request.path_info, exception
        )
        return unavailable_response(request)
