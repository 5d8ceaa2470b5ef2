"""The inference API's URLs (OpenAI's paths, no trailing slash)."""

from __future__ import annotations

from django.urls import path, re_path

from inference import views

urlpatterns = [
    path("v1/models", views.model_list, name="model-list"),
    path("v1/models/<path:model>", views.model_detail, name="model-detail"),
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/completions", views.completions, name="completions"),
    path("health", views.health, name="health"),
    path("internal/status", views.internal_status, name="internal-status"),
    re_path(r"^", views.not_found),
]
