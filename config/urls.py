"""URL routing: the admin, the health check, the API under /api/v1/ and its OpenAPI schema, and
single sign-on under /oidc/ when it is configured."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from common.api import error_body
from config.health import healthz

admin.site.site_header = "LLMOps governance"
admin.site.site_title = "LLMOps governance"
admin.site.index_title = "Approvals, inventory and the ledger"
admin.site.index_template = "admin/home.html"  # what waits for the person signed in: config/home.py

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
if settings.OIDC_ENABLED:  # single sign-on to the admin (governance/oidc.py)
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A path under /api/ that matches no route (``/approvals/abc``) answers the API's JSON error,
    as every other 404 of the API does; elsewhere, Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "no such endpoint or object"), status=404)
    return page_not_found(request, exception)


handler404 = not_found
