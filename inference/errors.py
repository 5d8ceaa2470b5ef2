"""OpenAI-style error bodies: ``{"error": {"message", "type", "param",
"code"}}``, the shape the ``openai`` client turns into its exceptions."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.http import JsonResponse

from core.unavailable import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class InferenceError(Exception):
    """A request the API answers with an error (never a 500)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = INVALID_REQUEST,  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def invalid(
    message: str, *, param: str | None, code: str | None = None
) -> InferenceError:
    """400 ``invalid_request_error`` naming the field in ``param``."""
    return InferenceError(message, param=param, code=code)


def error_body(error: InferenceError) -> dict[str, object]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: InferenceError) -> JsonResponse:
    response = JsonResponse(error_body(error), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def artifacts_unavailable(model: str, error: Exception) -> InferenceError:
    """The artifact store could not say whether ``model``'s files exist
    (object storage unreachable): 503, try again (the router and a replica
    alike)."""
    logger.warning("inference.artifacts_unavailable model=%s error=%s", model, error)
    return InferenceError(
        f"The files of '{model}' cannot be checked in the artifact store now; "
        "try again in a few seconds.",
        status=503,
        type="server_error",
        code="model_unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
