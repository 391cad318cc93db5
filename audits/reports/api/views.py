from __future__ import annotations

import io

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits.reports import selectors, services
from audits.reports.api.serializers import ReportRequestSerializer, ReportRunSerializer
from audits.reports.models import ReportRun
from common.api import ListView, validated
from common.errors import DomainError
from common.ratelimit import ApiRateLimit
from governance.selectors import project_list
from registry import selectors as registry_selectors
from registry.models import ModelVersion

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such report, project or model version, or not in a project of yours"),
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
        run = services.report_request(
            actor=request.user, kind=data["kind"], project=project, model_version=version,
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
