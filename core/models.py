from django.db import models
from django.db.models import Q


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Report(BaseModel):
    """A campaign's statistics as last computed by the refresh task.

    Pages read these rows and never compute what is in them: leaderboards fit
    Bradley-Terry with bootstrap intervals and quality reports walk every
    label, which is work for a worker (``models_hub.reports_refresh``), not
    for a request. See ``core.reports`` for the stale/refresh protocol.
    """

    class Kind(models.TextChoices):
        LEADERBOARD = "leaderboard", "Leaderboard"
        QUALITY = "quality", "Label quality"

    campaign = models.ForeignKey(
        "labeling.Campaign",
        on_delete=models.CASCADE,
        related_name="reports",
        db_index=False,  # the unique (campaign, kind) index serves lookups
    )
    kind = models.CharField(max_length=20, choices=Kind)
    payload = models.JSONField(
        default=dict, blank=True, help_text="The report as the pages render it."
    )
    computed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the payload was computed; null before the first refresh.",
    )
    label_count = models.PositiveIntegerField(
        default=0, help_text="Labels in the campaign when the payload was computed."
    )
    last_preference_id = models.BigIntegerField(
        null=True, blank=True, help_text="Highest preference id the payload includes."
    )
    stale = models.BooleanField(
        default=True, help_text="Labels changed since the payload was computed."
    )
    refresh_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a refresh was queued that has not started yet (debounce).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "kind"], name="core_report_one_per_kind"
            ),
            # A pending refresh always belongs to a stale report.
            models.CheckConstraint(
                condition=Q(refresh_requested_at__isnull=True) | Q(stale=True),
                name="core_report_pending_is_stale",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of campaign {self.campaign_id}"


class WorkerNode(BaseModel):
    """A Celery worker as it last described itself: where it runs, which
    queues it takes and what it has (GPUs, memory, process slots). Written
    when the worker starts and on its heartbeat (``core.workers``); a row
    whose heartbeat is older than ``core.workers.LIVE_SECONDS`` is a worker
    that went away, kept for the record."""

    name = models.CharField(
        max_length=200, unique=True, help_text="Celery node name, e.g. gpu@host."
    )
    host = models.CharField(max_length=200, help_text="The machine's host name.")
    pid = models.PositiveIntegerField(help_text="The worker's main process id.")
    queues = models.JSONField(default=list, help_text="Queues the worker consumes.")
    gpus = models.JSONField(
        default=list,
        blank=True,
        help_text='One entry per GPU: {"name": ..., "memory_bytes": ...}.',
    )
    cpu_count = models.PositiveIntegerField(
        default=1, help_text="CPU cores the worker may use."
    )
    memory_bytes = models.BigIntegerField(
        default=0, help_text="The machine's (or its cgroup's) memory, in bytes."
    )
    process_slots = models.PositiveIntegerField(
        default=1,
        help_text="Most processes one training job may start here: its GPUs, or "
        "its CPU cores on a worker without a GPU.",
    )
    strategies = models.JSONField(
        default=list,
        blank=True,
        help_text="Multi-process strategies it can run (ddp, fsdp, zero2, zero3).",
    )
    started_at = models.DateTimeField(help_text="When the worker started.")
    heartbeat_at = models.DateTimeField(help_text="Its latest report.")
    stopped_at = models.DateTimeField(
        null=True, blank=True, help_text="When it shut down cleanly."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
