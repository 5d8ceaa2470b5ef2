"""People and profile pages. A new token is rendered in the response to the
POST that issued it (never redirected to, never stored in the session) and
marked no-store, so it is shown once."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from core import people
from core.forms import PersonCreateForm, PersonUpdateForm, form_add_service_error
from core.people import IssuedToken, PersonError
from core.roles import ROLES, admin_required


def _people_page(
    request: HttpRequest,
    *,
    form: PersonCreateForm | None = None,
    issued: IssuedToken | None = None,
    error: str | None = None,
    status: int = 200,
) -> HttpResponse:
    rows = [
        {"user": user, "role": people.user_role(user=user)}
        for user in people.person_list()
    ]
    context: dict[str, Any] = {
        "rows": rows,
        "form": form or PersonCreateForm(),
        "issued": issued,
        "error": error,
        "roles": ROLES,
    }
    response = render(request, "core/people.html", context, status=status)
    if issued is not None:
        add_never_cache_headers(response)
    return response


@admin_required
@require_http_methods(["GET", "POST"])
def people_page(request: HttpRequest) -> HttpResponse:
    """The people table and the form that creates an account."""
    form = PersonCreateForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        return _people_page(request, form=form, status=400 if form.errors else 200)
    try:
        issued = people.user_create(
            **{**form.cleaned_data, "password": form.cleaned_data["password"] or None}
        )
    except (ValidationError, PersonError) as exc:
        form_add_service_error(form, exc)
        return _people_page(request, form=form, status=400)
    return _people_page(request, issued=issued)


@admin_required
@require_POST
def person_update(request: HttpRequest, user_id: int) -> HttpResponse:
    """Change a person's role or active flag from the table."""
    person = people.person_get(user_id=user_id)
    form = PersonUpdateForm(request.POST)
    if not form.is_valid():
        return _people_page(request, error=form.errors.as_text(), status=400)
    try:
        person = people.user_update(user=person, actor=request.user, **form.changes())
    except (ValidationError, PersonError) as exc:
        message = (
            exc.message if isinstance(exc, PersonError) else " ".join(exc.messages)
        )
        return _people_page(request, error=message, status=400)
    state = "active" if person.is_active else "deactivated"
    role = people.user_role(user=person) or "no role"
    messages.success(request, f"{person.get_username()}: {role}, {state}.")
    return redirect("core:people")


@admin_required
@require_POST
def person_token(request: HttpRequest, user_id: int) -> HttpResponse:
    """Issue or replace a person's token; the page shows it this once."""
    person = people.person_get(user_id=user_id)
    try:
        issued = people.token_rotate(user=person)
    except PersonError as exc:
        return _people_page(request, error=exc.message, status=400)
    return _people_page(request, issued=issued)


def _profile_page(
    request: HttpRequest, *, issued: IssuedToken | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "role": people.user_role(user=request.user),
        "token_created_at": people.token_created_at(user=request.user),
        "issued": issued,
    }
    response = render(request, "core/profile.html", context, status=status)
    if issued is not None:
        add_never_cache_headers(response)
    return response


@require_http_methods(["GET"])
def profile(request: HttpRequest) -> HttpResponse:
    """Any logged-in user: their role and whether they have an API token."""
    return _profile_page(request)


@require_POST
def profile_token(request: HttpRequest) -> HttpResponse:
    """Create or replace the user's own token; the page shows it this once."""
    return _profile_page(request, issued=people.token_rotate(user=request.user))
