"""URL routing: the admin, the health check, the API under /api/v1/ and its OpenAPI schema."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz

admin.site.site_header = "LLMOps governance"
admin.site.site_title = "LLMOps governance"
admin.site.index_title = "Approvals, inventory and the ledger"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/ledger/", include("audits.ledger.api.urls")),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("registry.api.urls")),
    path("api/v1/", include("training.api.urls")),
    path("api/v1/", include("audits.checks.api.urls")),
    path("api/v1/", include("serving.api.urls")),
    path("api/v1/privacy/", include("audits.privacy.api.urls")),
    path("api/v1/reports/", include("audits.reports.api.urls")),
]
