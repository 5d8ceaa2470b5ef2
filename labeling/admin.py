from django.contrib import admin

from labeling.models import Campaign, Comparison, Completion, Lease, Preference, Prompt


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "overlap_k", "lease_ttl_seconds", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    filter_horizontal = ["annotators"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["__str__", "campaign", "split", "is_golden", "created_at"]
    list_filter = ["campaign", "split", "is_golden"]
    search_fields = ["text"]
    readonly_fields = ["content_hash", "split"]


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "prompt", "origin", "source_label", "adapter"]
    list_filter = ["origin"]
    search_fields = ["text", "source_label"]
    raw_id_fields = ["prompt", "adapter"]
    readonly_fields = ["content_hash"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "status", "priority", "label_count"]
    list_filter = ["campaign", "status"]
    raw_id_fields = ["prompt", "completion_a", "completion_b"]
    readonly_fields = ["label_count", "lease_expiries", "done_by"]


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "status", "expires_at"]
    list_filter = ["status", "campaign"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "comparison",
        "annotator",
        "choice",
        "strength",
        "source",
        "created_at",
    ]
    list_filter = ["choice", "source", "comparison__campaign"]
    raw_id_fields = ["comparison", "annotator", "lease"]

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        # Labels are evidence: fix them by adjudication, never by editing.
        return False
