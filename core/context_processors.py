from typing import Any

from django.http import HttpRequest

from core import roles


def user_roles(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "is_annotator": roles.is_annotator(user),
        "is_reviewer": roles.is_reviewer(user),
        "is_admin": roles.is_admin(user),
    }
