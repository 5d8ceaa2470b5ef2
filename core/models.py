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
