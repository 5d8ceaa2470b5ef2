from django.urls import path

from core import people_api, workers_api

urlpatterns = [
    path("me/token/", people_api.MeTokenRotateApi.as_view(), name="api-me-token"),
    path("people/", people_api.PersonListApi.as_view(), name="api-person-list"),
    path(
        "people/<int:user_id>/",
        people_api.PersonDetailApi.as_view(),
        name="api-person-detail",
    ),
    path(
        "people/<int:user_id>/token/",
        people_api.PersonTokenRotateApi.as_view(),
        name="api-person-token",
    ),
    path("workers/", workers_api.WorkerListApi.as_view(), name="api-worker-list"),
]
