from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def storage_root_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    root = settings.STORAGE_ROOT
    if root.exists() and not root.is_dir():
        return [
            Error(f"ARBITER_STORAGE_ROOT {root} is not a folder.", id="arbiter.E001")
        ]
    return []
