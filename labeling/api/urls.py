from django.urls import path

from labeling.api import quality, ranking, revisions, views

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
        "leases/<int:lease_id>/ranking/",
        ranking.RankingCreateApi.as_view(),
        name="api-ranking-create",
    ),
    path(
        "comparisons/<int:comparison_id>/gold-ranking/",
        ranking.ComparisonGoldRankingApi.as_view(),
        name="api-comparison-gold-ranking",
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

# Live conversations (issue 14 §2), kept in one block.
from labeling.api import conversations  # noqa: E402

urlpatterns += [
    path(
        "campaigns/<int:campaign_id>/conversations/",
        conversations.ConversationCreateApi.as_view(),
        name="api-conversation-create",
    ),
    path(
        "conversations/<int:conversation_id>/",
        conversations.ConversationDetailApi.as_view(),
        name="api-conversation-detail",
    ),
    path(
        "conversations/<int:conversation_id>/messages/",
        conversations.ConversationMessageApi.as_view(),
        name="api-conversation-message",
    ),
    path(
        "conversations/<int:conversation_id>/turns/<int:number>/choice/",
        conversations.ConversationTurnChoiceApi.as_view(),
        name="api-conversation-choice",
    ),
    path(
        "conversations/<int:conversation_id>/turns/<int:number>/retry/",
        conversations.ConversationTurnRetryApi.as_view(),
        name="api-conversation-retry",
    ),
]
