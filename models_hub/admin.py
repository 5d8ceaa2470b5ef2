from django.contrib import admin

from models_hub.models import Adapter, BaseModelVersion


@admin.register(BaseModelVersion)
class BaseModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "dtype", "is_default"]


@admin.register(Adapter)
class AdapterAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "campaign", "role", "method", "status", "created_at"]
    list_filter = ["status", "role", "method"]
    raw_id_fields = ["parent"]
