import json
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest

from core import roles

DEMO_CREDENTIALS_FILE = "demo-credentials.json"


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


def user_roles(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "is_annotator": roles.is_annotator(user),
        "is_reviewer": roles.is_reviewer(user),
        "is_admin": roles.is_admin(user),
        # A callable: the template calls it only where it is used (the login page).
        "demo_accounts": demo_accounts,
    }
