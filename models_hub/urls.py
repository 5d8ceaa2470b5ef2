from django.urls import path

from models_hub import combine_views, deployment_views, drift_views, views

app_name = "models_hub"

urlpatterns = [
    path("", views.adapter_list, name="adapter-list"),
    path(
        "adapters/<int:adapter_id>/download/",
        views.adapter_download,
        name="adapter-download",
    ),
    # Before the generic adapter action below, which would answer 404.
    path(
        "adapters/<int:adapter_id>/serving/",
        deployment_views.adapter_serving_view,
        name="adapter-serving",
    ),
    path(
        "adapters/<int:adapter_id>/<str:action>/",
        views.adapter_action,
        name="adapter-action",
    ),
    path(
        "campaigns/<int:campaign_id>/leaderboard/",
        views.leaderboard,
        name="leaderboard",
    ),
    path("campaigns/<int:campaign_id>/compare/", views.compare, name="compare"),
    path(
        "campaigns/<int:campaign_id>/compare/generate/",
        views.compare_generate,
        name="compare-generate",
    ),
    path(
        "campaigns/<int:campaign_id>/compare/blind/",
        views.blind_review,
        name="blind-review",
    ),
    path(
        "campaigns/<int:campaign_id>/bootstrap/",
        views.campaign_bootstrap,
        name="campaign-bootstrap",
    ),
    path("generation/", views.generation_job_list, name="generation-job-list"),
    path(
        "generation/<int:generation_job_id>/",
        views.generation_job_detail,
        name="generation-job-detail",
    ),
    path(
        "generation/<int:generation_job_id>/cancel/",
        views.generation_job_cancel,
        name="generation-job-cancel",
    ),
    path(
        "combine/",
        combine_views.combine_job_create_view,
        name="combine-job-create",
    ),
    path(
        "combine/<int:combine_job_id>/",
        combine_views.combine_job_detail,
        name="combine-job-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/deployment/",
        deployment_views.deployment_detail,
        name="deployment",
    ),
    path(
        "campaigns/<int:campaign_id>/deployment/change/",
        deployment_views.deployment_update_view,
        name="deployment-update",
    ),
    path(
        "campaigns/<int:campaign_id>/deployment/rollback/",
        deployment_views.deployment_rollback_view,
        name="deployment-rollback",
    ),
    path(
        "campaigns/<int:campaign_id>/drift/",
        drift_views.drift_detail,
        name="drift",
    ),
    path(
        "campaigns/<int:campaign_id>/drift/evaluate/",
        drift_views.drift_evaluate_view,
        name="drift-evaluate",
    ),
    path(
        "campaigns/<int:campaign_id>/drift/policy/",
        drift_views.drift_policy_view,
        name="drift-policy",
    ),
    path(
        "drift-alerts/<int:alert_id>/acknowledge/",
        drift_views.drift_alert_acknowledge_view,
        name="drift-alert-acknowledge",
    ),
]
