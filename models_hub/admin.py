from django.contrib import admin

from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    GenerationSettings,
)


@admin.register(BaseModelVersion)
class BaseModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "dtype", "is_default"]


@admin.register(Adapter)
class AdapterAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "version",
        "campaign",
        "role",
        "method",
        "status",
        "created_at",
    ]
    list_filter = ["status", "role", "method"]
    raw_id_fields = ["parent"]
    readonly_fields = [
        "status"
    ]  # promote / roll back / retire from the Models page: they are recorded


@admin.register(AdapterEvent)
class AdapterEventAdmin(admin.ModelAdmin):
    list_display = [
        "adapter",
        "action",
        "previous_champion",
        "actor",
        "override",
        "created_at",
    ]
    list_filter = ["action", "override"]


@admin.register(GenerationSettings)
class GenerationSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "campaign",
        "enabled",
        "prompts_per_round",
        "compare_against_base",
        "priority",
        "require_significant_win",
    ]
