"""People: accounts, their role and their API token, without the Django admin.

A role is one of the groups of ``core.roles`` (superusers count as admins).
An API token is DRF's ``authtoken`` row, one per user. Its key is returned
only by the service that makes it (``user_create``, ``token_rotate``); no
selector returns a key, so a page or API can show a token once, on the
response that issued it, and never list it again.

Accounts are never deleted: their labels must stay. ``user_update`` with
``is_active=False`` deactivates one instead (its sessions and token stop
authenticating) and ``is_active=True`` brings it back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from rest_framework.authtoken.models import Token

from core.exceptions import ApplicationError, NotFound
from core.roles import ADMIN, ANNOTATOR, REVIEWER, ROLES
from core.services import roles_ensure

logger = logging.getLogger(__name__)

# Written by seed_demo to the data directory: the demo accounts' passwords.
DEMO_CREDENTIALS_FILE = "demo-credentials.json"

# Highest first: a user in several role groups has the highest of them.
_ROLES_HIGH_TO_LOW = (ADMIN, REVIEWER, ANNOTATOR)


class PersonError(ApplicationError):
    """A rule about accounts said no. ``field`` names the input at fault, so
    the API answers ``{"detail": reason, field: [reason]}`` and a form shows
    the reason next to that field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, extra={field: [message]} if field else None)
        self.field = field


@dataclass(frozen=True)
class IssuedToken:
    """A user and their new API token's key: show ``key`` once, on the
    response that asked for it; nothing lists it again."""

    user: AbstractUser
    key: str
    created: datetime


# ---------------------------------------------------------------- selectors


def person_list() -> QuerySet[Any]:
    """Every account, by username, with ``has_token`` annotated and the role
    groups prefetched (``user_role`` then costs no query)."""
    return (
        get_user_model()
        .objects.annotate(has_token=Exists(Token.objects.filter(user=OuterRef("pk"))))
        .prefetch_related(
            Prefetch("groups", queryset=Group.objects.filter(name__in=ROLES))
        )
        .order_by("username")
    )


def person_get(*, user_id: int) -> Any:
    """One account as ``person_list`` gives it; ``NotFound`` if none has
    this id. Callers check that the actor is an admin."""
    person = person_list().filter(pk=user_id).first()
    if person is None:
        raise NotFound("No person has this id.")
    return person


def user_role(*, user: Any) -> str | None:
    """The user's highest role (superusers are admins), or None without
    one. Uses the prefetched groups of ``person_list`` when present."""
    if user.is_superuser:
        return ADMIN
    names = {group.name for group in user.groups.all()}
    return next((role for role in _ROLES_HIGH_TO_LOW if role in names), None)


def token_created_at(*, user: Any) -> datetime | None:
    """When the user's current API token was made; None without one."""
    return Token.objects.filter(user=user).values_list("created", flat=True).first()


# ---------------------------------------------------------------- services


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise PersonError(
            f"Unknown role {role!r}; expected one of {', '.join(ROLES)}.",
            field="role",
        )


def _role_set(*, user: Any, role: str) -> None:
    groups = roles_ensure()
    user.groups.remove(*(groups[name] for name in ROLES if name != role))
    user.groups.add(groups[role])
    # core.roles caches a user's groups on the instance.
    user.__dict__.pop("_arbiter_groups", None)


def _password_set(*, user: Any, password: str | None) -> None:
    if not password:
        user.set_unusable_password()
        return
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc
    user.set_password(password)


def _token_issue(*, user: Any) -> IssuedToken:
    Token.objects.filter(user=user).delete()
    token = Token.objects.create(user=user)
    return IssuedToken(user=user, key=token.key, created=token.created)


@transaction.atomic
def user_create(
    *, username: str, role: str, email: str = "", password: str | None = None
) -> IssuedToken:
    """Create an active account with ``role`` and an API token.

    Without ``password`` the account gets an unusable password: it works
    through its API token only and cannot log in to the pages. A password
    must pass ``AUTH_PASSWORD_VALIDATORS``. Raises ``ValidationError`` keyed
    by field (``username`` taken or invalid, ``email``, ``password``) and
    ``PersonError`` on ``role``.
    """
    _check_role(role)
    user = get_user_model()(username=username, email=email, is_staff=role == ADMIN)
    _password_set(user=user, password=password)
    user.full_clean()
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        # Another request took the username between full_clean and save.
        raise ValidationError(
            {"username": ["A user with that username already exists."]}
        ) from exc
    _role_set(user=user, role=role)
    logger.info("people.user.created", extra={"user_id": user.pk, "role": role})
    return _token_issue(user=user)


@transaction.atomic
def user_update(
    *,
    user: Any,
    actor: Any,
    role: str | None = None,
    is_active: bool | None = None,
    email: str | None = None,
) -> Any:
    """Change ``user``'s role, active flag or email; None leaves it as is.

    The caller has checked that ``actor`` is an admin. An admin can neither
    demote nor deactivate themselves (``PersonError``), so the product always
    keeps an admin. A superuser's admin rights come from the superuser flag,
    so their role cannot be lowered here. Deactivating deletes the API token
    (reactivating does not bring it back: issue a new one); a deactivated
    user's sessions stop authenticating at their next request.
    """
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if role is not None:
        _check_role(role)
        if user.pk == actor.pk and role != ADMIN:
            raise PersonError(
                "You cannot remove your own admin role; ask another admin, so "
                "that the product always keeps one.",
                field="role",
            )
        if user.is_superuser and role != ADMIN:
            raise PersonError(
                f"{user.get_username()} is a superuser and stays an admin "
                "whatever their role; clear the superuser flag in the Django "
                "admin first.",
                field="role",
            )
    if is_active is False and user.pk == actor.pk:
        raise PersonError(
            "You cannot deactivate yourself; ask another admin.", field="is_active"
        )
    fields = []
    if role is not None:
        _role_set(user=user, role=role)
        user.is_staff = role == ADMIN
        fields.append("is_staff")
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        fields.append("is_active")
        if not is_active:
            Token.objects.filter(user=user).delete()
    if email is not None:
        user.email = email
        fields.append("email")
    if fields:
        user.full_clean()
        user.save(update_fields=fields)
    logger.info(
        "people.user.updated",
        extra={"user_id": user.pk, "actor_id": actor.pk, "fields": fields},
    )
    return person_get(user_id=user.pk)


@transaction.atomic
def token_rotate(*, user: Any) -> IssuedToken:
    """Give ``user`` a new API token; the old one stops working at once.

    Locks the user row, so two rotations at once leave exactly one token.
    A deactivated account gets none (``PersonError``): reactivate it first.
    """
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        raise PersonError(
            f"{user.get_username()} is deactivated; reactivate the account "
            "before issuing a token."
        )
    issued = _token_issue(user=user)
    logger.info("people.token.rotated", extra={"user_id": user.pk})
    return issued


def demo_accounts() -> list[str]:
    """The demo accounts that exist (active users named in the credentials
    file that ``seed_demo`` writes to the data directory); empty outside a
    demo. Usernames only: the passwords stay in the file and the terminal."""
    path = settings.DATA_DIR / DEMO_CREDENTIALS_FILE
    try:
        names = list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []
    return list(
        get_user_model()
        .objects.filter(username__in=names, is_active=True)
        .order_by("username")
        .values_list("username", flat=True)
    )
