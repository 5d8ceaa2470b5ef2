from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender: AppConfig, **kwargs: Any) -> None:
    # Permissions exist only after every app's post_migrate; the role groups
    # are built from them, so wait for the last app.
    from django.apps import apps

    from core.services import roles_ensure

    if sender.label != list(apps.get_app_configs())[-1].label:
        return
    roles_ensure()


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Arbiter core"

    def ready(self) -> None:
        from core import checks  # noqa: F401  (registers system checks)

        post_migrate.connect(_ensure_roles, dispatch_uid="core.ensure_roles")
