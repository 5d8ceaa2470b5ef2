from django.urls import path

from labeling import conversation_views, ranking_views, review_views, views

app_name = "labeling"

urlpatterns = [
    path("", views.campaign_list, name="campaign-list"),
    path("campaigns/new/", views.campaign_create, name="campaign-create"),
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign-detail"),
    path(
        "campaigns/<int:campaign_id>/edit/", views.campaign_edit, name="campaign-edit"
    ),
    path(
        "campaigns/<int:campaign_id>/import/",
        views.campaign_import,
        name="campaign-import",
    ),
    path("campaigns/<int:campaign_id>/label/", views.label_start, name="label-start"),
    path(
        "campaigns/<int:campaign_id>/label/done/", views.label_done, name="label-done"
    ),
    path(
        "campaigns/<int:campaign_id>/label/recent/",
        views.label_recent,
        name="label-recent",
    ),
    path(
        "campaigns/<int:campaign_id>/label/<int:lease_id>/",
        views.lease_detail,
        name="lease-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/label/<int:lease_id>/submit/",
        views.lease_submit,
        name="lease-submit",
    ),
    path(
        "campaigns/<int:campaign_id>/label/<int:lease_id>/rank/",
        ranking_views.lease_rank_submit,
        name="lease-rank-submit",
    ),
    path(
        "campaigns/<int:campaign_id>/quality/",
        views.campaign_quality,
        name="campaign-quality",
    ),
    path(
        "campaigns/<int:campaign_id>/annotators/<int:annotator_id>/",
        views.annotator_detail,
        name="annotator-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/comparisons/<int:comparison_id>/review/",
        views.comparison_review,
        name="comparison-review",
    ),
    path(
        "campaigns/<int:campaign_id>/labels/",
        review_views.campaign_labels,
        name="campaign-labels",
    ),
    path(
        "campaigns/<int:campaign_id>/labels/export/",
        review_views.campaign_labels_export,
        name="campaign-labels-export",
    ),
    path(
        "campaigns/<int:campaign_id>/pairs/<int:comparison_id>/",
        review_views.comparison_detail,
        name="comparison-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/pairs/<int:comparison_id>/gold/",
        review_views.comparison_gold,
        name="comparison-gold",
    ),
    path(
        "campaigns/<int:campaign_id>/pairs/<int:comparison_id>/adjudicate/",
        review_views.comparison_adjudicate_view,
        name="comparison-adjudicate",
    ),
]

# Live conversations: their own views module, their own block of routes.
_CONVERSATION = "campaigns/<int:campaign_id>/conversations/"
_ONE = _CONVERSATION + "<int:conversation_id>/"
urlpatterns += [
    path(
        _CONVERSATION,
        conversation_views.conversation_list,
        name="conversation-list",
    ),
    path(
        _CONVERSATION + "settings/",
        conversation_views.conversation_settings_save,
        name="conversation-settings",
    ),
    path(
        _CONVERSATION + "new/",
        conversation_views.conversation_new,
        name="conversation-new",
    ),
    path(_ONE, conversation_views.conversation_detail, name="conversation-detail"),
    path(
        _ONE + "send/", conversation_views.conversation_send, name="conversation-send"
    ),
    path(
        _ONE + "finish/",
        conversation_views.conversation_finish,
        name="conversation-finish",
    ),
    path(
        _ONE + "turns/<int:number>/",
        conversation_views.conversation_turn,
        name="conversation-turn",
    ),
    path(
        _ONE + "turns/<int:number>/choose/",
        conversation_views.conversation_choose,
        name="conversation-choose",
    ),
    path(
        _ONE + "turns/<int:number>/retry/",
        conversation_views.conversation_retry,
        name="conversation-retry",
    ),
]
