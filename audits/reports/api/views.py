from __future__ import annotations

import io
from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits.reports import selectors, services
from audits.reports.api.serializers import ReportRequestSerializer, ReportRunSerializer
from audits.reports.models import ReportRun
from common.api import ListView, no_input, validated
from common.errors import DomainError
from common.ratelimit import ApiRateLimit
from common.security_log import refusal
from governance.selectors import project_list
from registry import selectors as registry_selectors
from registry.models import ModelVersion
from systems.models import AISystem

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(
        description="no such report, project, model version or AI system, or not in a project of yours"
    ),
    409: OpenApiResponse(description="the report's current state does not allow this"),
    422: OpenApiResponse(description="a policy or domain rule forbids it (the message names the rule)"),
}


class ReportListView(ListView):
    """Report runs of the projects where you are a compliance officer or an auditor, newest first."""

    serializer_class = ReportRunSerializer
    list_operation_id = "reports_list"
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"GET": "reports.read", "POST": "reports.generate"}

    def get_queryset(self) -> QuerySet[ReportRun]:
        return selectors.report_list(user=self.request.user).order_by("-created_at", "-pk")

    @extend_schema(operation_id="reports_create", request=ReportRequestSerializer,
                   responses={202: ReportRunSerializer, **ERRORS})  # fmt: skip
    def post(self, request: Request) -> Response:
        """Ask for a report; it is generated on the worker (poll the run, then fetch ``…/pdf``)."""
        data = validated(ReportRequestSerializer, request)
        project = registry_selectors.project_get(user=request.user, slug=data["project"]) if data["project"] else None
        version = None
        if data["model_version"] is not None:
            # Among the projects the caller may see: a version of another project is answered like
            # one that does not exist, without naming its project.
            visible = ModelVersion.objects.filter(model__project__in=project_list(user=request.user))
            version = visible.filter(pk=data["model_version"]).select_related("model__project").first()
            if version is None or (project and version.model.project_id != project.pk):
                raise DomainError("invalid_input", f"model_version: no model version {data['model_version']}",
                                  fields={"model_version": ["unknown"]})  # fmt: skip
        system = None
        if data["ai_system"] is not None:
            # The same for an AI system: one of another project is answered like one that does not exist.
            visible_systems = AISystem.objects.filter(project__in=project_list(user=request.user))
            system = visible_systems.filter(pk=data["ai_system"]).select_related("project").first()
            if system is None or (project and system.project_id != project.pk):
                raise DomainError("invalid_input", f"ai_system: no AI system {data['ai_system']}",
                                  fields={"ai_system": ["unknown"]})  # fmt: skip
        run = services.report_request(
            actor=request.user, kind=data["kind"], project=project, model_version=version, ai_system=system,
            period_start=data["period_start"], period_end=data["period_end"],
        )  # fmt: skip
        return Response(ReportRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ReportDetailView(APIView):
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"GET": "reports.read"}

    @extend_schema(operation_id="reports_retrieve", responses={200: ReportRunSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ReportRunSerializer(selectors.report_get(user=request.user, pk=pk)).data)


class ReportPdfView(APIView):
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"GET": "reports.read"}

    @extend_schema(
        operation_id="reports_pdf",
        responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="the signed PDF"),
                   404: ERRORS[404], 409: ERRORS[409]},
    )  # fmt: skip
    def get(self, request: Request, pk: int) -> FileResponse:
        """The signed PDF (409 while it is not generated yet). Check it with
        ``python manage.py report verify FILE.pdf``."""
        run = selectors.report_get(user=request.user, pk=pk)
        pdf = services.report_pdf(run)
        return FileResponse(io.BytesIO(pdf), as_attachment=True, filename=f"{run.kind}-{run.report_id}.pdf",
                            content_type="application/pdf")  # fmt: skip


# --- The data subject's letter (audits.reports.letters) ------------------------------------------

LETTER_ERRORS = {
    400: OpenApiResponse(description="a body was sent: the command takes none"),
    403: OpenApiResponse(description="only a compliance officer of the request's project issues letters"),
    404: OpenApiResponse(description="no such request, or not in a project of yours"),
    409: OpenApiResponse(description="the request is not a searched access or know request (the message says why)"),
}


def _letter_response(letter: Any) -> HttpResponse:
    response = HttpResponse(letter.pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{letter.filename}"'
    response["X-Letter-SHA256"] = letter.sha256  # of the signed PDF, as the ledger records it
    response["X-Package-SHA256"] = letter.package_sha256  # of the embedded package's RFC 8785 form
    response["Cache-Control"] = "no-store"
    return response


class AccessLetterView(APIView):
    """The answer to an access (GDPR Art. 15) or know (CCPA) request as a signed PDF letter to the
    person, the access package embedded as ``access-package.json``. Issuing it issues the package
    and records both digests in the ledger (``X-Package-SHA256``, ``X-Letter-SHA256``); a POST,
    like the package's own command, since each call is a recorded act."""

    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"POST": "reports.generate"}

    @extend_schema(
        operation_id="privacy_requests_access_letter", request=None,
        responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="the signed letter"),
                   **LETTER_ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> HttpResponse:
        from audits.privacy import selectors as privacy_selectors
        from audits.reports.letters import access_letter_issue

        no_input(request)
        dsr = privacy_selectors.request_get(user=request.user, pk=pk)
        return _letter_response(access_letter_issue(actor=request.user, request=dsr))


def access_letter_admin(request: HttpRequest, pk: int) -> HttpResponse:
    """The admin's step "Issue and download the letter (PDF)" on a request's page (wrapped by
    ``admin_view``): the letter as a download, or back to the page with the refusal as a message."""
    from django.contrib import messages

    from audits.privacy import selectors as privacy_selectors
    from audits.reports.letters import access_letter_issue

    page = reverse("admin:privacy_datasubjectrequest_change", args=[pk])
    if request.method != "POST":
        return HttpResponseRedirect(page)
    try:
        dsr = privacy_selectors.request_get(user=request.user, pk=pk)
        letter = access_letter_issue(actor=request.user, request=dsr)
    except DomainError as exc:
        refusal(request, exc, object_type="privacy.datasubjectrequest", object_id=pk)
        messages.error(request, f"DSR-{pk}: the letter was not issued: {exc.message}")
        return HttpResponseRedirect(page)
    return _letter_response(letter)
