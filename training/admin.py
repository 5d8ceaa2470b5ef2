from django.contrib import admin

from training.models import (
    DatasetSnapshot,
    TrainingJob,
    TrainingMetric,
    TrainingPipeline,
    TrainingPolicy,
)


@admin.register(TrainingPolicy)
class TrainingPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "campaign",
        "enabled",
        "pipeline",
        "min_new_preferences",
        "min_interval_minutes",
        "last_triggered_at",
    ]
    list_filter = ["enabled", "pipeline"]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "campaign",
        "method",
        "status",
        "progress_step",
        "progress_total",
        "created_at",
    ]
    list_filter = ["status", "method"]
    readonly_fields = [f.name for f in TrainingJob._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # launch through the training pages or the API (validates and enqueues)


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "tie_policy", "last_preference_id", "created_at"]
    readonly_fields = ["counts", "content_hash", "storage_path", "last_preference_id"]


@admin.register(TrainingPipeline)
class TrainingPipelineAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "kind", "status", "triggered_by", "created_at"]


@admin.register(TrainingMetric)
class TrainingMetricAdmin(admin.ModelAdmin):
    list_display = ["job", "step", "name", "value"]
    list_filter = ["name"]
