from django.urls import path

from training.api import loop, views
from training.api.campaign_settings import CampaignSettingsApi

urlpatterns = [
    path(
        "training/jobs/",
        views.TrainingJobListApi.as_view(),
        name="api-training-job-list",
    ),
    path(
        "training/jobs/<int:job_id>/",
        views.TrainingJobDetailApi.as_view(),
        name="api-training-job-detail",
    ),
    path(
        "training/jobs/<int:job_id>/cancel/",
        views.TrainingJobCancelApi.as_view(),
        name="api-training-job-cancel",
    ),
    path(
        "training/jobs/<int:job_id>/metrics/",
        views.TrainingJobMetricsApi.as_view(),
        name="api-training-job-metrics",
    ),
    path(
        "training/config/<str:method>/",
        views.TrainingConfigDefaultsApi.as_view(),
        name="api-training-config",
    ),
    path(
        "training/snapshots/",
        views.DatasetSnapshotListApi.as_view(),
        name="api-snapshot-list",
    ),
    path(
        "training/pipelines/",
        views.TrainingPipelineLaunchApi.as_view(),
        name="api-pipeline-launch",
    ),
    path(
        "campaigns/<int:campaign_id>/settings/",
        CampaignSettingsApi.as_view(),
        name="api-campaign-settings",
    ),
    path(
        "campaigns/<int:campaign_id>/loop/",
        loop.CampaignLoopApi.as_view(),
        name="api-campaign-loop",
    ),
]
