from django.urls import path

from training import campaign_views, loop_views, views

app_name = "training"

urlpatterns = [
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_launch, name="job-launch"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/relaunch/", views.job_relaunch, name="job-relaunch"),
    path("jobs/<int:job_id>/metrics/", views.job_metrics, name="job-metrics"),
    path(
        "campaigns/<int:campaign_id>/settings/",
        campaign_views.campaign_settings,
        name="campaign-settings",
    ),
    path(
        "campaigns/<int:campaign_id>/loop/",
        loop_views.campaign_loop,
        name="campaign-loop",
    ),
]
