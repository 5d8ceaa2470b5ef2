from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.db import transaction

from core.roles import ADMIN, ANNOTATOR, REVIEWER

DOMAIN_APPS = ("labeling", "training", "models_hub")


@transaction.atomic
def roles_ensure() -> dict[str, Group]:
    """Create the three role groups and their Django-admin permissions.
    Idempotent; run after migrations (the launcher and tests do)."""
    groups = {
        name: Group.objects.get_or_create(name=name)[0]
        for name in (ANNOTATOR, REVIEWER, ADMIN)
    }
    domain = Permission.objects.filter(content_type__app_label__in=DOMAIN_APPS)
    # Admins also see and clear login lockouts (django-axes); reviewers do
    # not: the attempts name accounts and addresses.
    lockouts = Permission.objects.filter(content_type__app_label="axes")
    groups[ADMIN].permissions.set(domain | lockouts)
    groups[REVIEWER].permissions.set(domain.filter(codename__startswith="view_"))
    return groups


@transaction.atomic
def user_create(
    *, username: str, password: str, role: str, email: str = ""
) -> AbstractUser:
    if role not in (ANNOTATOR, REVIEWER, ADMIN):
        raise ValueError(f"role must be annotator, reviewer or admin, not {role!r}")
    groups = roles_ensure()
    user = get_user_model()(username=username, email=email, is_staff=role == ADMIN)
    user.set_password(password)
    user.full_clean()
    user.save()
    user.groups.add(groups[role])
    return user
