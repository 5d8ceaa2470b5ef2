"""Three roles, as Django groups: annotator, reviewer, admin.

Superusers count as admins. Reviewers see everything annotators do plus
stats, exports and models; admins also configure campaigns, import data and
run training.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

ANNOTATOR = "annotator"
REVIEWER = "reviewer"
ADMIN = "admin"
ROLES = (ANNOTATOR, REVIEWER, ADMIN)

User = AbstractBaseUser | AnonymousUser


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
