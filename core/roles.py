"""Three roles, as Django groups: annotator, reviewer, admin.

Superusers count as admins. Reviewers see everything annotators do plus
stats, exports and models; admins also configure campaigns, import data and
run training.

This module is the one place a role is checked: ``role_required`` guards
HTML views and ``core.permissions`` guards the API, both through
``has_role``. Anonymous visitors of a page are sent to the login page; a
logged-in user without the role gets a 403 (logging in again would not help).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render

ANNOTATOR = "annotator"
REVIEWER = "reviewer"
ADMIN = "admin"
ROLES = (ANNOTATOR, REVIEWER, ADMIN)

User = AbstractBaseUser | AnonymousUser
View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def _groups(user: User) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_arbiter_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
        user._arbiter_groups = cached  # type: ignore[union-attr]
    return cached


def is_admin(user: User) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or ADMIN in _groups(user)))  # type: ignore[union-attr]


def is_reviewer(user: User) -> bool:
    return is_admin(user) or REVIEWER in _groups(user)


def is_annotator(user: User) -> bool:
    return is_reviewer(user) or ANNOTATOR in _groups(user)


_CHECKS: dict[str, Callable[[User], bool]] = {
    ANNOTATOR: is_annotator,
    REVIEWER: is_reviewer,
    ADMIN: is_admin,
}


def has_role(user: User, role: str) -> bool:
    """Whether ``user`` has ``role`` or a higher one."""
    return _CHECKS[role](user)


def missing_role_message(role: str) -> str:
    return f"You need the {role} role."


def role_required(role: str) -> Callable[[View], View]:
    """Guard an HTML view: anonymous → the login page, logged in without
    ``role`` → 403 rendered with ``error.html``."""
    if role not in _CHECKS:
        raise ValueError(f"Unknown role {role!r}; expected one of {ROLES}.")

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(
            request: HttpRequest, *args: Any, **kwargs: Any
        ) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                return render(
                    request,
                    "error.html",
                    {"message": missing_role_message(role), "status": 403},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorator


annotator_required = role_required(ANNOTATOR)
reviewer_required = role_required(REVIEWER)
admin_required = role_required(ADMIN)
