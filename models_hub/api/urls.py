from django.urls import path

from models_hub.api import views

urlpatterns = [
    path("models/base/", views.BaseModelListApi.as_view(), name="api-base-model-list"),
    path("models/adapters/", views.AdapterListApi.as_view(), name="api-adapter-list"),
    path(
        "models/adapters/<int:adapter_id>/",
        views.AdapterDetailApi.as_view(),
        name="api-adapter-detail",
    ),
    path(
        "models/adapters/<int:adapter_id>/promote/",
        views.AdapterPromoteApi.as_view(),
        name="api-adapter-promote",
    ),
    path(
        "models/adapters/<int:adapter_id>/retire/",
        views.AdapterRetireApi.as_view(),
        name="api-adapter-retire",
    ),
    path(
        "models/adapters/<int:adapter_id>/events/",
        views.AdapterEventListApi.as_view(),
        name="api-adapter-events",
    ),
    path(
        "models/adapters/<int:adapter_id>/download/",
        views.AdapterDownloadApi.as_view(),
        name="api-adapter-download",
    ),
    path(
        "models/adapters/<int:adapter_id>/merge/",
        views.AdapterMergeApi.as_view(),
        name="api-adapter-merge",
    ),
    path(
        "models/campaigns/<int:campaign_id>/rollback/",
        views.ChampionRollbackApi.as_view(),
        name="api-champion-rollback",
    ),
    path(
        "models/campaigns/<int:campaign_id>/leaderboard/",
        views.LeaderboardApi.as_view(),
        name="api-leaderboard",
    ),
    path(
        "models/campaigns/<int:campaign_id>/compare/",
        views.CompareApi.as_view(),
        name="api-compare",
    ),
    path(
        "models/campaigns/<int:campaign_id>/bootstrap/",
        views.CampaignBootstrapApi.as_view(),
        name="api-campaign-bootstrap",
    ),
    path(
        "models/generation-jobs/",
        views.GenerationJobListApi.as_view(),
        name="api-generation-job-list",
    ),
    path(
        "models/generation-jobs/<int:generation_job_id>/",
        views.GenerationJobDetailApi.as_view(),
        name="api-generation-job-detail",
    ),
    path(
        "models/generation-jobs/<int:generation_job_id>/cancel/",
        views.GenerationJobCancelApi.as_view(),
        name="api-generation-job-cancel",
    ),
]
