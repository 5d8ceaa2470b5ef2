"""Writes for the model hub: base models and the adapter registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from core.artifacts import artifact_store
from core.exceptions import Conflict
from labeling.models import Campaign
from models_hub.exceptions import PromotionBlocked
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    GenerationSettings,
)
from models_hub.services.deployments import deployment_candidate_end

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
    """The adapter's local folder. With object storage it is fetched into
    this machine's cache first (``ArtifactError`` when it cannot be)."""
    return artifact_store().path(adapter.storage_path)


def adapter_files_present(adapter: Adapter) -> bool:
    """Whether the adapter's files are stored (no download)."""
    return artifact_store().has(adapter.storage_path, "adapter_config.json")


def generation_settings_for(campaign: Campaign) -> GenerationSettings:
    settings_row, _ = GenerationSettings.objects.get_or_create(campaign=campaign)
    return settings_row


def adapter_champion(*, campaign: Campaign | None, role: str) -> Adapter | None:
    return Adapter.objects.filter(
        campaign=campaign, role=role, status=Adapter.Status.CHAMPION
    ).first()


def gate_decision(
    evidence: dict[str, Any], *, settings_row: GenerationSettings
) -> str | None:
    """Why the gate says no (None: it says yes). The gate needs at least
    ``gate_min_comparisons`` labeled comparisons against the champion (or the
    base) on held-out prompts and a lower 95% bound of the win rate above 0.5."""
    n, needed = evidence.get("n", 0), settings_row.gate_min_comparisons
    if n < max(needed, 1):
        return (
            f"the gate needs {max(needed, 1)} labeled held-out comparisons against "
            f"{evidence.get('opponent', 'the champion')}; it has {n}"
        )
    if evidence["lower"] <= 0.5:
        return (
            "the gate needs the lower 95% bound of the win rate above 0.5; it is "
            f"{evidence['lower']:.2f} (win rate {evidence['rate']:.2f} over {n} labels)"
        )
    return None


def _deployment_candidate_end(
    adapter: Adapter, actor: AbstractBaseUser | None, why: str
) -> None:
    """A version that became champion or was retired stops being any
    deployment's canary or A/B candidate (recorded as ``ended``)."""
    deployment_candidate_end(adapter=adapter, actor=actor, reason=f"{adapter} {why}")


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

    A policy promotion records its evidence: the human win rate against the
    champion, or against the base when there is none yet. When the
    campaign's gate is on and the evidence does not pass it, only an
    ``override`` with a ``reason`` promotes (recorded as such). A reward
    model's evidence is its held-out metrics. Locks the campaign row.
    """
    from models_hub.selectors import adapter_gate_evidence

    Campaign.objects.select_for_update().filter(pk=adapter.campaign_id).first()
    adapter = Adapter.objects.select_for_update().get(pk=adapter.pk)
    if adapter.status == Adapter.Status.CHAMPION:
        raise Conflict("This adapter is already the champion.")
    if adapter.status == Adapter.Status.RETIRED:
        raise Conflict("A retired adapter cannot be promoted.")
    previous = adapter_champion(campaign=adapter.campaign, role=adapter.role)
    settings_row = (
        generation_settings_for(adapter.campaign) if adapter.campaign else None
    )
    refusal = None
    if adapter.role == Adapter.Role.POLICY:
        evidence = adapter_gate_evidence(adapter=adapter)
        if settings_row is not None and settings_row.require_significant_win:
            refusal = gate_decision(evidence, settings_row=settings_row)
    else:
        # A reward model writes no completions for people to compare: its
        # evidence is its held-out accuracy, and the human gate does not apply.
        evidence = {"metrics": adapter.metrics}
    if refusal and not override:
        raise PromotionBlocked(
            f"Not promoted: {refusal}. Promote anyway only as an override with a reason.",
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
        override=bool(refusal) and override,
        reason=reason.strip(),
        evidence=evidence,
    )
    _deployment_candidate_end(adapter, actor, "promoted to champion")
    logger.info(
        "models_hub.adapter.promoted adapter=%s previous=%s automatic=%s",
        adapter.pk,
        previous and previous.pk,
        actor is None,
    )
    return adapter


@transaction.atomic
def adapter_rollback(
    *, campaign: Campaign, role: str, actor: AbstractBaseUser | None, reason: str = ""
) -> Adapter | None:
    """Bring back what the current champion replaced, in one step: the
    previous champion, or the base model (no champion) when it was the
    first. The demoted champion is retired. Returns the champion after the
    rollback (None: the base). Raises ``Conflict`` when there is no champion."""
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    current = adapter_champion(campaign=campaign, role=role)
    if current is None:
        raise Conflict("There is no champion to roll back; the base model serves.")
    promotion = (
        AdapterEvent.objects.filter(
            adapter=current, action=AdapterEvent.Action.PROMOTED
        )
        .order_by("-created_at", "-id")
        .first()
    )
    previous = promotion.previous_champion if promotion else None
    if previous is not None and previous.status == Adapter.Status.RETIRED:
        previous = None  # retired since: fall back to the base
    current.status = Adapter.Status.RETIRED
    current.save(update_fields=["status", "updated_at"])
    if previous is None:
        AdapterEvent.objects.create(
            adapter=current,
            action=AdapterEvent.Action.ROLLED_BACK,
            actor=actor,
            reason=reason,
            evidence={"to": "base"},
        )
        logger.info("models_hub.adapter.rolled_back to=base from=%s", current.pk)
        return None
    previous.status = Adapter.Status.CHAMPION
    previous.save(update_fields=["status", "updated_at"])
    _deployment_candidate_end(previous, actor, "champion again by a rollback")
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
    _deployment_candidate_end(adapter, actor, "retired")
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
