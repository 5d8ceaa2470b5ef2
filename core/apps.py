from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender: AppConfig, **kwargs: Any) -> None:
    # Permissions exist only after migrate; the role groups are built from them.
    from core.services import roles_ensure

    roles_ensure()


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Arbiter core"

    def ready(self) -> None:
        from core import checks  # noqa: F401  (registers system checks)

        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="core.ensure_roles")
