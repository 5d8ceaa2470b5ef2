from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_default_base_model(sender: AppConfig, **kwargs: Any) -> None:
    # The built-in base model is a row every install has, made here rather
    # than by the first GET that lists base models (reads never write).
    from models_hub.services.registry import base_model_default

    base_model_default()


class ModelsHubConfig(AppConfig):
    name = "models_hub"
    verbose_name = "Model hub"

    def ready(self) -> None:
        post_migrate.connect(
            _ensure_default_base_model,
            sender=self,
            dispatch_uid="models_hub.ensure_default_base_model",
        )
