from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import (
    LoginRequiredMiddleware as DjangoLoginRequiredMiddleware,
)
from django.http import HttpRequest, HttpResponseBase


class LoginRequiredMiddleware(DjangoLoginRequiredMiddleware):
    """Login everywhere for pages; the API answers 401/403 through DRF instead
    of redirecting, since its clients authenticate with tokens."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponseBase],
        view_args: list[Any],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


class ApplicationErrorMiddleware:
    """Pages: a domain error becomes a 4xx page with its message, never a 500.
    (The API has its own handler in ``core.api``.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        from django.shortcuts import render

        from core.exceptions import ApplicationError

        if not isinstance(exception, ApplicationError):
            return None
        return render(
            request,
            "error.html",
            {"message": exception.message, "status": exception.status_code},
            status=exception.status_code,
        )
