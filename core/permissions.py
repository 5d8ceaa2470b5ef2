"""DRF permissions for the three roles; the same check as the pages'
``core.roles.role_required``. DRF answers 401 without credentials and 403
with ``{"detail": message}`` to a user without the role."""

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core import roles


class _HasRole(BasePermission):
    role: str

    def has_permission(self, request: Request, view: Any) -> bool:
        return roles.has_role(request.user, self.role)


class IsAnnotator(_HasRole):
    role = roles.ANNOTATOR
    message = roles.missing_role_message(roles.ANNOTATOR)


class IsReviewer(_HasRole):
    role = roles.REVIEWER
    message = roles.missing_role_message(roles.REVIEWER)


class IsAdmin(_HasRole):
    role = roles.ADMIN
    message = roles.missing_role_message(roles.ADMIN)


class AdminToWrite(BasePermission):
    """Reads pass (pair it with the role that may read); writes need admin."""

    message = roles.missing_role_message(roles.ADMIN)

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in SAFE_METHODS or roles.is_admin(request.user)
