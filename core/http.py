"""Small HTTP helpers shared by the HTML views."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme


def next_url(request: HttpRequest) -> str | None:
    """The request's ``next`` parameter (POST, else GET) when it points to
    this site; None otherwise, so that no form can redirect off-site."""
    candidate = request.POST.get("next") or request.GET.get("next")
    if candidate and url_has_allowed_host_and_scheme(
        candidate,
        allowed_hosts={request.get_host()},
        require_https=request.is_secure(),
    ):
        return candidate
    return None


def redirect_next(
    request: HttpRequest, fallback: str, *args: Any
) -> HttpResponseRedirect:
    """Redirect to a same-site ``next``, else to ``fallback`` (a URL name or
    path, resolved with ``args``)."""
    target = next_url(request)
    if target is not None:
        return HttpResponseRedirect(target)
    return redirect(fallback, *args)
