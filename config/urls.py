from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core.people import demo_accounts

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        # demo_accounts is a callable: the page names the demo accounts, if any.
        login_not_required(
            auth_views.LoginView.as_view(extra_context={"demo_accounts": demo_accounts})
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("training.api.urls")),
    path("api/v1/", include("models_hub.api.urls")),
    path("api/v1/", include("core.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        # Split: the init script is a static-like URL, not inline (CSP).
        SpectacularSwaggerSplitView.as_view(url_name="api-schema"),
        name="api-docs",
    ),
    path("training/", include("training.urls")),
    path("models/", include("models_hub.urls")),
    path("", include("core.urls")),
    path("", include("labeling.urls")),
]
