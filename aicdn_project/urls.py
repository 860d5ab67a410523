"""Top-level URLs: admin, the versioned API of every app, the OpenAPI schema and docs, metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from aicdn_project import monitoring, views
from conversations import views as chat_views

api_v1 = [
    path("", include("blueprints.api.urls")),
    path("", include("blueprints.api.analysis_urls")),
    path("", include("llm.api.urls")),
    path("", include("llm.api.tools_urls")),
    path("", include("conversations.api.urls")),
    path("", include("iprs.api.urls")),
    path("", include("engines.api.urls")),
    path("monitoring/health", monitoring.health, name="health"),
    path("monitoring/health/detailed", monitoring.HealthDetailedView.as_view(), name="health-detailed"),
    path("monitoring/rate-limit/stats", monitoring.RateLimitStatsView.as_view(), name="rate-limit-stats"),
    path("auth/token", obtain_auth_token, name="auth-token"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/", chat_views.chat_page, name="chat"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", monitoring.metrics_view, name="metrics"),
]
