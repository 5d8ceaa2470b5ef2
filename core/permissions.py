from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core import roles


class IsAnnotator(BasePermission):
    message = "You need the annotator role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return roles.is_annotator(request.user)


class IsReviewer(BasePermission):
    message = "You need the reviewer role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return roles.is_reviewer(request.user)


class IsAdmin(BasePermission):
    message = "You need the admin role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return roles.is_admin(request.user)
