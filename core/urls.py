from django.urls import path

from core import views, workers_views

app_name = "core"

urlpatterns = [
    path("people/", views.people_page, name="people"),
    path("people/<int:user_id>/", views.person_update, name="person-update"),
    path("people/<int:user_id>/token/", views.person_token, name="person-token"),
    path("profile/", views.profile, name="profile"),
    path("profile/token/", views.profile_token, name="profile-token"),
    path("workers/", workers_views.worker_list, name="workers"),
]
