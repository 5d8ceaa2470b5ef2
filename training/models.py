from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.models import BaseModel

METHOD_CHOICES = [
    ("sft", "SFT"),
    ("reward", "Reward model"),
    ("dpo", "DPO"),
    ("ppo", "PPO"),
    ("rloo", "RLOO"),
]


#: Most processes (GPUs) one job may ask for: eight GPUs per node is the
#: largest common machine, and a job runs on one node.
MAX_PROCESSES = 8


class Strategy(models.TextChoices):
    """How a job of several processes shares the work (ml/launch_configs)."""

    DDP = "ddp", "DDP (each GPU holds the whole model)"
    ZERO2 = "zero2", "DeepSpeed ZeRO-2 (optimizer state and gradients sharded)"
    ZERO3 = "zero3", "DeepSpeed ZeRO-3 (weights sharded too)"
    FSDP = "fsdp", "FSDP (PyTorch fully sharded)"


class DatasetSnapshot(BaseModel):
    """A frozen set of preferences that a run trains on.

    Its files (``preference/``, ``sft/``, ``prompts/`` with ``train``/``val``
    JSONL each) are written once under the storage root; the split follows
    each prompt's split, and golden prompts are never included.
    """

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.PROTECT, related_name="snapshots"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    tie_policy = models.CharField(
        max_length=16, default="skip", help_text="skip or both_orders."
    )
    filters = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"exclude_annotator_ids": [3], "min_abs_strength": 1}.',
    )
    last_preference_id = models.BigIntegerField(
        default=0, help_text="Highest preference id included; later labels are 'new'."
    )
    counts = models.JSONField(default=dict, help_text="Rows per file and split.")
    content_hash = models.CharField(
        max_length=64, help_text="SHA-256 over the written files."
    )
    storage_path = models.CharField(
        max_length=500, help_text="Folder relative to the storage root."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"snapshot {self.pk} of {self.campaign_id}"


class TrainingPipeline(BaseModel):
    """One scheduled or launched sequence of jobs (e.g. reward model → RLOO)."""

    class Kind(models.TextChoices):
        DPO = "dpo", "DPO"
        REWARD_PPO = "reward_ppo", "reward model → PPO"
        REWARD_RLOO = "reward_rloo", "reward model → RLOO"
        SFT = "sft", "SFT"

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.PROTECT, related_name="pipelines"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RUNNING
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, related_name="pipelines"
    )
    config_overrides = models.JSONField(default=dict, blank=True)
    triggered_by = models.CharField(
        max_length=32, default="manual", help_text="manual or scheduler."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign"],
                condition=Q(status="running"),
                name="training_one_running_pipeline",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} pipeline {self.pk}"


class TrainingJob(BaseModel):
    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    class Phase(models.TextChoices):
        """What a job is doing, in the order a run goes through them. A job
        that fails or is cancelled keeps the phase it stopped in."""

        QUEUED = "queued", "waiting for a GPU worker"
        CONVERTING = "converting", "converting the base model"
        LOADING = "loading", "loading the base model"
        TRAINING = "training", "training"
        EVALUATING = "evaluating", "evaluating on the validation split"
        SAVING = "saving", "saving the adapter"
        DONE = "done", "done"

    FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.PROTECT, related_name="training_jobs"
    )
    method = models.CharField(max_length=16, choices=METHOD_CHOICES)
    base_model = models.ForeignKey(
        "models_hub.BaseModelVersion", on_delete=models.PROTECT, related_name="jobs"
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, related_name="jobs"
    )
    pipeline = models.ForeignKey(
        TrainingPipeline,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="jobs",
    )
    reward_adapter = models.ForeignKey(
        "models_hub.Adapter",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The reward model that PPO/RLOO optimise against.",
    )
    parent_adapter = models.ForeignKey(
        "models_hub.Adapter",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    config = models.JSONField(
        default=dict, help_text="Validated runner config (ml.config)."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    phase = models.CharField(
        max_length=16,
        choices=Phase.choices,
        default=Phase.QUEUED,
        help_text="What the run is doing: queued, converting, loading, training, "
        "evaluating, saving or done.",
    )
    cancel_requested = models.BooleanField(default=False)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(
        max_length=200, blank=True, help_text="host:pid of the process running it."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    final_metrics = models.JSONField(default=dict, blank=True)
    memory_estimate_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Estimated peak resident memory of the run (ml.memory), in "
        "bytes; null when the base model's size is unknown.",
    )
    memory_note = models.TextField(
        blank=True,
        help_text="The estimate against the worker's memory at launch, and any "
        "adjustment made to fit it.",
    )
    runner_pid = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Process id of the child process that runs the training.",
    )
    processes = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PROCESSES)],
        help_text="Processes the run starts: one per GPU, or CPU processes on a "
        "worker without a GPU. More than one goes to the gpu-multi queue.",
    )
    strategy = models.CharField(
        max_length=8,
        choices=Strategy.choices,
        default=Strategy.DDP,
        help_text="How several processes share the work: ddp, zero2, zero3 or fsdp.",
    )
    placement = models.CharField(
        max_length=300,
        blank=True,
        help_text="Where the run ran: the worker and what it gave the job.",
    )
    rss_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Resident memory of the run at its last sample, in bytes.",
    )
    peak_rss_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Highest resident memory sampled during the run, in bytes.",
    )
    adapter = models.OneToOneField(
        "models_hub.Adapter",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="job",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["status", "heartbeat_at"], name="training_job_status_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_method_display()} job {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 100 if self.status == self.Status.SUCCEEDED else 0
        return min(100, round(100 * self.progress_step / self.progress_total))


class TrainingMetric(models.Model):
    job = models.ForeignKey(
        TrainingJob, on_delete=models.CASCADE, related_name="metrics"
    )
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["job", "name", "step"], name="training_metric_series_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.step}={self.value}"


class TrainingPolicy(BaseModel):
    """Per-campaign scheduler settings. Every active campaign has one: the
    scheduler creates it with these defaults (a DPO round after 40 new labels,
    at most one every 10 minutes) the first time it sees the campaign."""

    campaign = models.OneToOneField(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="training_policy"
    )
    enabled = models.BooleanField(
        default=True, help_text="Train automatically when the thresholds are met."
    )
    pipeline = models.CharField(
        max_length=16,
        choices=TrainingPipeline.Kind.choices,
        default=TrainingPipeline.Kind.DPO,
    )
    min_new_preferences = models.PositiveIntegerField(
        default=40,
        validators=[MinValueValidator(1)],
        help_text="New labels since the last snapshot.",
    )
    min_interval_minutes = models.PositiveIntegerField(
        default=10, help_text="At least this long between two scheduled pipelines."
    )
    base_model = models.ForeignKey(
        "models_hub.BaseModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    config_overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per method: {"dpo": {"learning_rate": 5e-4}, "reward": {...}}.',
    )
    tie_policy = models.CharField(max_length=16, default="skip")
    processes = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PROCESSES)],
        help_text="Processes (GPUs) per job; empty: what fits the base model's size.",
    )
    strategy = models.CharField(
        max_length=8,
        choices=Strategy.choices,
        blank=True,
        help_text="Strategy for several processes; empty: what fits the base model.",
    )
    last_triggered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "training policies"

    def __str__(self) -> str:
        return f"policy for {self.campaign}"
