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
