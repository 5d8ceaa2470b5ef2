"""Login throttling on top of django-axes.

Failed logins are counted per account from one address and per address.
``AXES_FAILURE_LIMIT`` failures for one account from one address, or
``ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT`` from one address over all accounts,
lock that client out for ``AXES_COOLOFF_TIME``. The login page then says so
and when to try again (429 with ``Retry-After``). Token API calls never call
``authenticate()`` and are not counted.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

logger = logging.getLogger(__name__)


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' lockout check for every login that comes with a request.

    ``authenticate()`` without a request has no client address to count: in
    this product that is only in-process code (the test client's
    ``login()``, a shell). Every login over HTTP (the login page, the admin's
    login) passes its request and is throttled.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes' database handler with a separate limit for the address alone.

    Axes compares one number with one limit; the address's count is scaled
    so that it reaches ``AXES_FAILURE_LIMIT`` exactly when it reaches
    ``ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT``.
    """

    def get_failures(self, request: Any, credentials: dict | None = None) -> int:
        limit = settings.AXES_FAILURE_LIMIT
        address_limit = max(1, settings.ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT)
        failures = 0
        for parameters, attempts in zip(
            settings.AXES_LOCKOUT_PARAMETERS,
            self.get_user_attempts(request, credentials),
            strict=True,
        ):
            count = attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0
            if parameters == "ip_address":
                count = math.floor(count * limit / address_limit)
            failures = max(failures, count)
        return failures


def _retry_at(request: HttpRequest, credentials: dict | None) -> datetime:
    cool_off = get_cool_off(request) or timedelta(0)
    handler = LoginThrottleHandler()
    times = [
        attempts.aggregate(last=Max("attempt_time"))["last"]
        for attempts in handler.get_user_attempts(request, credentials)
    ]
    last = max((t for t in times if t is not None), default=timezone.now())
    return last + cool_off


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict | None = None,
) -> HttpResponse:
    """The login page with the lockout notice and when to retry (429)."""
    retry_at = _retry_at(request, credentials)
    seconds = max(1, math.ceil((retry_at - timezone.now()).total_seconds()))
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    logger.warning("core.login.locked_out username=%s", username)
    form = AuthenticationForm(request, initial={"username": username})
    response = render(
        request,
        "registration/login.html",
        {
            "form": form,
            "next": request.POST.get("next", request.GET.get("next", "")),
            "locked_out": True,
            "retry_at": retry_at,
            "retry_minutes": math.ceil(seconds / 60),
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(seconds)
    return response
