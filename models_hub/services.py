"""Writes for the model hub: base models and the adapter registry."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from labeling.models import Campaign
from models_hub.models import Adapter, BaseModelVersion

logger = logging.getLogger(__name__)

BUILTIN_SMOLLM2 = "builtin:smollm2-135m-instruct"


def base_model_default() -> BaseModelVersion:
    base = BaseModelVersion.objects.filter(is_default=True).first()
    if base is None:
        base, _ = BaseModelVersion.objects.get_or_create(
            name="SmolLM2-135M-Instruct", defaults={"source": BUILTIN_SMOLLM2, "is_default": True}
        )
    return base


def base_model_local_path(base: BaseModelVersion) -> str:
    """The folder (or hub id) runners load. Call only on a GPU worker: the
    built-in model is converted from its GGUF on first use (seconds, once)."""
    if base.source == BUILTIN_SMOLLM2:
        from training.runners.smollm2 import ensure_smollm2

        return str(ensure_smollm2(Path(settings.DATA_DIR) / "models" / "smollm2-135m-instruct"))
    return base.source


@transaction.atomic
def adapter_register(
    *,
    campaign: Campaign,
    base_model: BaseModelVersion,
    method: str,
    peft_type: str,
    storage_path: str,
    metrics: dict[str, float],
    parent: Adapter | None = None,
) -> Adapter:
    """Create the next adapter version for (campaign, role). Call inside the
    transaction that marks the producing job succeeded."""
    role = Adapter.Role.REWARD if method == "reward" else Adapter.Role.POLICY
    # Lock the campaign row so two jobs finishing together get distinct versions.
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    last = Adapter.objects.filter(campaign=campaign, role=role).aggregate(v=Max("version"))["v"] or 0
    adapter = Adapter(
        base_model=base_model,
        campaign=campaign,
        name=f"{method}-v{last + 1}",
        version=last + 1,
        role=role,
        method=method,
        peft_type=peft_type.upper(),
        storage_path=storage_path,
        parent=parent,
        metrics=metrics,
    )
    adapter.full_clean()
    adapter.save()
    return adapter


def adapter_path(adapter: Adapter) -> Path:
    return Path(settings.STORAGE_ROOT) / adapter.storage_path
