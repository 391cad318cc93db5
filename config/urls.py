"""URL routing: the admin, the health check, the API under /api/v1/ and its OpenAPI schema, and
single sign-on under /oidc/ when it is configured. Errors under /api/ that Django answers itself
(no route, a request it refuses before the view, a server error) answer the API's JSON error."""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, reverse
from django.views.defaults import bad_request, page_not_found, server_error
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission

from audits.reports.api.views import AccessLetterView, access_letter_admin
from common.api import body_refusal, error_body
from common.parsers import BodyTooLarge
from config.health import healthz

admin.site.site_header = "LLMOps governance"
admin.site.site_title = "LLMOps governance"
admin.site.index_title = "Approvals, inventory and the ledger"
admin.site.index_template = "admin/home.html"  # what waits for the person signed in: config/home.py


class DocsReaders(BasePermission):
    """Anyone, or a signed-in caller only (a token, or an admin session that passed the second
    factor) where ``API_DOCS_REQUIRE_SIGN_IN`` is on: production's default."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return not settings.API_DOCS_REQUIRE_SIGN_IN or bool(request.user and request.user.is_authenticated)


class SchemaView(SpectacularAPIView):
    permission_classes = [DocsReaders]


class DocsView(SpectacularSwaggerView):
    permission_classes = [DocsReaders]

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, NotAuthenticated):  # a person with a browser: the admin's sign-in, then back
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # The data subject's letter (audits/reports/letters.py): an admin step of the privacy request
    # page, mounted here because the PDF layer is a floor above the privacy app.
    path(
        "admin/privacy/datasubjectrequest/<int:pk>/letter/",
        admin.site.admin_view(access_letter_admin),
        name="privacy-access-letter-admin",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", DocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/ledger/", include("audits.ledger.api.urls")),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("registry.api.urls")),
    path("api/v1/", include("training.api.urls")),
    path("api/v1/", include("audits.checks.api.urls")),
    path("api/v1/", include("serving.api.urls")),
    path("api/v1/", include("incidents.api.urls")),
    path("api/v1/", include("systems.api.urls")),
    path("api/v1/privacy/requests/<int:pk>/access-letter", AccessLetterView.as_view(), name="api-privacy-letter"),
    path("api/v1/privacy/", include("audits.privacy.api.urls")),
    path("api/v1/reports/", include("audits.reports.api.urls")),
    path("api/v1/", include("audits.reports.inventory.urls")),
    path("witness/", include("audits.ledger.witness.urls")),
]
if settings.OIDC_ENABLED:  # single sign-on to the admin (governance/oidc.py)
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A path under /api/ that matches no route (``/approvals/abc``) answers the API's JSON error,
    as every other 404 of the API does; elsewhere, Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "no such endpoint or object"), status=404)
    return page_not_found(request, exception)


def refused_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A request Django refuses before any view reads it (a body over
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``: 413; a disallowed host, too many fields: 400) answers the
    API's JSON error under /api/; elsewhere, Django's page."""
    if not request.path.startswith("/api/"):
        return bad_request(request, exception)
    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        refusal = body_refusal(exception)
        code = "body_too_large" if isinstance(refusal, BodyTooLarge) else "malformed_request"
        return JsonResponse(error_body(code, str(refusal.detail)), status=refusal.status_code)
    return JsonResponse(error_body("bad_request", "the request was refused before it was read"), status=400)


def internal_error(request: HttpRequest) -> HttpResponse:
    """A server error under /api/ answers the API's JSON error (never a stack trace)."""
    if request.path.startswith("/api/"):
        message = "internal error: it is logged under this answer's X-Request-ID"
        return JsonResponse(error_body("internal_error", message), status=500)
    return server_error(request)


handler400 = refused_request
handler404 = not_found
handler500 = internal_error
