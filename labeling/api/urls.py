from django.urls import path

from labeling.api import quality, revisions, views

urlpatterns = [
    path("me/", views.MeApi.as_view(), name="api-me"),
    path("campaigns/", views.CampaignListApi.as_view(), name="api-campaign-list"),
    path(
        "campaigns/<int:campaign_id>/",
        views.CampaignDetailApi.as_view(),
        name="api-campaign-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/import/",
        views.CampaignImportApi.as_view(),
        name="api-campaign-import",
    ),
    path(
        "campaigns/<int:campaign_id>/next/",
        views.ComparisonNextApi.as_view(),
        name="api-comparison-next",
    ),
    path(
        "campaigns/<int:campaign_id>/stats/",
        views.CampaignStatsApi.as_view(),
        name="api-campaign-stats",
    ),
    path(
        "campaigns/<int:campaign_id>/export/",
        views.PreferenceExportApi.as_view(),
        name="api-preference-export",
    ),
    path(
        "leases/<int:lease_id>/preference/",
        views.PreferenceCreateApi.as_view(),
        name="api-preference-create",
    ),
    path(
        "preferences/<int:preference_id>/",
        revisions.PreferenceReviseApi.as_view(),
        name="api-preference-revise",
    ),
    path(
        "leases/<int:lease_id>/skip/",
        views.LeaseSkipApi.as_view(),
        name="api-lease-skip",
    ),
    path(
        "campaigns/<int:campaign_id>/quality/",
        quality.CampaignQualityApi.as_view(),
        name="api-campaign-quality",
    ),
    path(
        "campaigns/<int:campaign_id>/annotators/<int:annotator_id>/timeline/",
        quality.AnnotatorTimelineApi.as_view(),
        name="api-annotator-timeline",
    ),
    path(
        "campaigns/<int:campaign_id>/disagreements/",
        quality.DisagreementListApi.as_view(),
        name="api-disagreement-list",
    ),
    path(
        "comparisons/<int:comparison_id>/adjudicate/",
        quality.ComparisonAdjudicateApi.as_view(),
        name="api-comparison-adjudicate",
    ),
    path(
        "comparisons/<int:comparison_id>/gold/",
        quality.ComparisonGoldApi.as_view(),
        name="api-comparison-gold",
    ),
]
