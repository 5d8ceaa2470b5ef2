"""The one DRF exception handler: domain errors and Django validation errors
become 4xx with a reason; nothing a client sends produces a 500. An
unavailable database is a 503 with ``Retry-After`` (see ``core.unavailable``)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import ApplicationError
from core.unavailable import MESSAGE, RETRY_AFTER_SECONDS, database_unavailable


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if database_unavailable(exc):
        # PostgreSQL is restarting or unreachable: the client retries.
        return Response(
            {"detail": MESSAGE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DjangoValidationError):
        detail: Any = (
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        )
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, ApplicationError):
        body = {"detail": exc.message, **exc.extra}
        return Response(body, status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_400_BAD_REQUEST:
        if isinstance(response.data, dict) and "detail" not in response.data:
            response.data = {"detail": "Invalid input.", **response.data}
        elif isinstance(response.data, list):
            response.data = {"detail": " ".join(str(x) for x in response.data)}
    return response
