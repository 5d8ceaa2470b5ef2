"""Writes for the model hub: base models and the adapter registry."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from core.exceptions import Conflict
from labeling.models import Campaign
from models_hub.exceptions import PromotionBlocked
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    GenerationSettings,
)

logger = logging.getLogger(__name__)

BUILTIN_SMOLLM2 = "builtin:smollm2-135m-instruct"


def base_model_default() -> BaseModelVersion:
    base = BaseModelVersion.objects.filter(is_default=True).first()
    if base is None:
        base, _ = BaseModelVersion.objects.get_or_create(
            name="SmolLM2-135M-Instruct",
            defaults={"source": BUILTIN_SMOLLM2, "is_default": True},
        )
    return base


def base_model_local_path(base: BaseModelVersion) -> str:
    """The folder (or hub id) runners load. Call only on a GPU worker: the
    built-in model is converted from its GGUF on first use (seconds, once)."""
    if base.source == BUILTIN_SMOLLM2:
        from ml.smollm2 import ensure_smollm2

        return str(ensure_smollm2(Path(settings.DATA_DIR) / "models"))
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
    last = (
        Adapter.objects.filter(campaign=campaign, role=role).aggregate(
            v=Max("version")
        )["v"]
        or 0
    )
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
    AdapterEvent.objects.create(adapter=adapter, action=AdapterEvent.Action.REGISTERED)
    return adapter


def adapter_path(adapter: Adapter) -> Path:
    return Path(settings.STORAGE_ROOT) / adapter.storage_path


def generation_settings_for(campaign: Campaign) -> GenerationSettings:
    settings_row, _ = GenerationSettings.objects.get_or_create(campaign=campaign)
    return settings_row


def adapter_champion(*, campaign: Campaign | None, role: str) -> Adapter | None:
    return Adapter.objects.filter(
        campaign=campaign, role=role, status=Adapter.Status.CHAMPION
    ).first()


@transaction.atomic
def adapter_promote(
    *,
    adapter: Adapter,
    actor: AbstractBaseUser | None,
    override: bool = False,
    reason: str = "",
) -> Adapter:
    """Make ``adapter`` its campaign's champion for its role; the previous
    champion becomes a candidate again (so a rollback can bring it back).

    When the campaign's promotion gate is on, the candidate's lower 95% bound
    of human win rate against the champion must exceed 0.5, unless
    ``override`` (recorded with ``reason``). Locks the campaign row.
    """
    from models_hub.selectors import adapter_win_rate_against_champion

    Campaign.objects.select_for_update().filter(pk=adapter.campaign_id).first()
    adapter = Adapter.objects.select_for_update().get(pk=adapter.pk)
    if adapter.status == Adapter.Status.CHAMPION:
        raise Conflict("This adapter is already the champion.")
    if adapter.status == Adapter.Status.RETIRED:
        raise Conflict("A retired adapter cannot be promoted.")
    previous = adapter_champion(campaign=adapter.campaign, role=adapter.role)
    evidence = adapter_win_rate_against_champion(adapter=adapter) if previous else {}
    gate = (
        adapter.campaign is not None
        and generation_settings_for(adapter.campaign).require_significant_win
    )
    if gate and previous is not None and not override:
        if evidence.get("n", 0) == 0 or evidence["lower"] <= 0.5:
            raise PromotionBlocked(
                "The promotion gate needs the candidate's lower 95% bound of win rate against the "
                f"champion above 0.5; it is {evidence.get('lower', 0):.2f} over {evidence.get('n', 0)} labels.",
                extra={"evidence": evidence},
            )
    if override and not reason.strip():
        raise Conflict("Say why when overriding the promotion gate.")
    if previous is not None:
        previous.status = Adapter.Status.CANDIDATE
        previous.save(update_fields=["status", "updated_at"])
    adapter.status = Adapter.Status.CHAMPION
    adapter.save(update_fields=["status", "updated_at"])
    AdapterEvent.objects.create(
        adapter=adapter,
        action=AdapterEvent.Action.PROMOTED,
        previous_champion=previous,
        actor=actor,
        override=override,
        reason=reason.strip(),
        evidence=evidence,
    )
    logger.info(
        "models_hub.adapter.promoted adapter=%s previous=%s",
        adapter.pk,
        previous and previous.pk,
    )
    return adapter


@transaction.atomic
def adapter_rollback(
    *, campaign: Campaign, role: str, actor: AbstractBaseUser | None, reason: str = ""
) -> Adapter:
    """Bring back the champion that the current one replaced, in one step.
    The demoted champion is retired. Raises ``Conflict`` when there is
    nothing to roll back to."""
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    current = adapter_champion(campaign=campaign, role=role)
    if current is None:
        raise Conflict("There is no champion to roll back.")
    promotion = (
        AdapterEvent.objects.filter(
            adapter=current, action=AdapterEvent.Action.PROMOTED
        )
        .order_by("-created_at", "-id")
        .first()
    )
    previous = promotion.previous_champion if promotion else None
    if previous is None or previous.status == Adapter.Status.RETIRED:
        raise Conflict("The champion has no earlier champion to return to.")
    current.status = Adapter.Status.RETIRED
    current.save(update_fields=["status", "updated_at"])
    previous.status = Adapter.Status.CHAMPION
    previous.save(update_fields=["status", "updated_at"])
    AdapterEvent.objects.create(
        adapter=previous,
        action=AdapterEvent.Action.ROLLED_BACK,
        previous_champion=current,
        actor=actor,
        reason=reason,
    )
    logger.info("models_hub.adapter.rolled_back to=%s from=%s", previous.pk, current.pk)
    return previous


@transaction.atomic
def adapter_retire(
    *, adapter: Adapter, actor: AbstractBaseUser | None, reason: str = ""
) -> Adapter:
    adapter = Adapter.objects.select_for_update().get(pk=adapter.pk)
    if adapter.status == Adapter.Status.CHAMPION:
        raise Conflict(
            "Promote another adapter or roll back before retiring the champion."
        )
    if adapter.status == Adapter.Status.RETIRED:
        return adapter
    adapter.status = Adapter.Status.RETIRED
    adapter.save(update_fields=["status", "updated_at"])
    AdapterEvent.objects.create(
        adapter=adapter, action=AdapterEvent.Action.RETIRED, actor=actor, reason=reason
    )
    return adapter


@transaction.atomic
def base_model_create(
    *, name: str, source: str, revision: str = "", dtype: str = "auto"
) -> BaseModelVersion:
    """Register a Hugging Face model id or a local folder as a base model.
    Nothing is downloaded here; the GPU worker loads it on first use."""
    base = BaseModelVersion(
        name=name, source=source.strip(), revision=revision, dtype=dtype
    )
    base.full_clean()
    base.save()
    return base
