from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits.checks import selectors, services
from audits.checks.api.serializers import (
    EvaluationDetailSerializer,
    EvaluationRequestSerializer,
    EvaluationSerializer,
    ScanDetailSerializer,
    ScanRequestSerializer,
    ScanSerializer,
)
from audits.checks.models import BiasEvaluation, SecurityScan
from common import artifacts
from common.api import CommandView, ListView, ReasonInputSerializer, validated
from common.errors import Conflict, DomainError, NotFound
from governance.roles import Role
from registry import selectors as registry_selectors

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such scan, evaluation or model version, or not in a project of yours"),
    409: OpenApiResponse(description="the scan or evaluation's current state does not allow this"),
    422: OpenApiResponse(description="a policy or domain rule forbids it (the message names the rule)"),
}


def _no_such(field: str, kind: str, pk: int) -> DomainError:
    return DomainError("invalid_input", f"{field}: no {kind} {pk}", fields={field: [f"no {kind} {pk}"]})


def _scan_detail(scan: SecurityScan) -> dict[str, object]:
    scan.approvals_loaded = selectors.audit_approvals("security_scan", scan)  # type: ignore[attr-defined]
    return ScanDetailSerializer(scan).data


def _evaluation_detail(evaluation: BiasEvaluation) -> dict[str, object]:
    evaluation.approvals_loaded = selectors.audit_approvals("bias_evaluation", evaluation)  # type: ignore[attr-defined]
    return EvaluationDetailSerializer(evaluation).data


class _ModelVersionAuditsView(ListView):
    audit_model: type[SecurityScan] | type[BiasEvaluation]
    digest_reads: tuple[str, ...] = ()  # the relations each audit's digest reads

    def get_queryset(self) -> QuerySet[Any]:
        version = selectors.model_version_get(user=self.request.user, pk=self.kwargs["pk"])
        audits = selectors.audit_list(self.audit_model, user=self.request.user).filter(model_version=version)
        return audits.select_related(*self.digest_reads)


class ModelVersionScansView(_ModelVersionAuditsView):
    """The security scans of this model version, newest first."""

    audit_model = SecurityScan
    serializer_class = ScanSerializer
    list_operation_id = "security_scans_list"

    @extend_schema(
        operation_id="security_scans_create", request=ScanRequestSerializer,
        responses={201: ScanDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Scan this model version with garak under a profile of ``policies/audits/security.yaml``
        (ML engineers, security reviewers). It is queued at once unless a ``security_scan.run``
        policy asks for an approval first."""
        version = selectors.model_version_get(user=request.user, pk=pk)
        services.require_requester(request.user, version.model.project, Role.SECURITY_REVIEWER)
        data = validated(ScanRequestSerializer, request)
        scan = services.security_scan_request(actor=request.user, model_version=version, profile_name=data["profile"])
        return Response(_scan_detail(scan), status=status.HTTP_201_CREATED)


class ScanDetailView(APIView):
    @extend_schema(operation_id="security_scans_retrieve", responses={200: ScanDetailSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """A scan with its findings per probe and detector, its verdict and its waiver requests."""
        return Response(_scan_detail(selectors.audit_get(SecurityScan, user=request.user, pk=pk)))


class ModelVersionEvaluationsView(_ModelVersionAuditsView):
    """The bias evaluations of this model version, newest first."""

    audit_model = BiasEvaluation
    digest_reads = ("dataset_version",)
    serializer_class = EvaluationSerializer
    list_operation_id = "bias_evaluations_list"

    @extend_schema(
        operation_id="bias_evaluations_create", request=EvaluationRequestSerializer,
        responses={201: EvaluationDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Evaluate this model version for bias on an approved evaluation dataset version (ML
        engineers, fairness reviewers), under a profile of ``policies/audits/bias.yaml``. A
        sensitive feature that is special-category data (GDPR Art. 9) needs its legal basis
        (``legal_basis``) and the six safeguards of AI Act Art. 10(5) confirmed, else 400 naming
        the missing field."""
        version = selectors.model_version_get(user=request.user, pk=pk)
        services.require_requester(request.user, version.model.project, Role.FAIRNESS_REVIEWER)
        data = validated(EvaluationRequestSerializer, request)
        # Through selectors of what the caller may see: an object in a project the caller holds no
        # role in answers exactly like one that does not exist.
        try:
            dataset_version = registry_selectors.version_get(user=request.user, pk=data["dataset_version"])
        except NotFound:
            raise _no_such("dataset_version", "dataset version", data["dataset_version"]) from None
        try:
            template = registry_selectors.prompt_template_get(user=request.user, pk=data["prompt_template"])
        except NotFound:
            raise _no_such("prompt_template", "prompt template", data["prompt_template"]) from None
        evaluation = services.bias_evaluation_request(
            actor=request.user, model_version=version, dataset_version=dataset_version, prompt_template=template,
            label_field=data["label_field"], sensitive_feature=data["sensitive_feature"],
            label_mapping=data["label_mapping"], profile_name=data["profile"],
            special_category=data["special_category"], legal_basis=data["legal_basis"],
            safeguards_confirmed=data["safeguards_confirmed"],
        )  # fmt: skip
        return Response(_evaluation_detail(evaluation), status=status.HTTP_201_CREATED)


class EvaluationDetailView(APIView):
    @extend_schema(
        operation_id="bias_evaluations_retrieve", responses={200: EvaluationDetailSerializer, 404: ERRORS[404]}
    )
    def get(self, request: Request, pk: int) -> Response:
        """An evaluation with its metrics by group, differences, verdict and waiver requests."""
        return Response(_evaluation_detail(selectors.audit_get(BiasEvaluation, user=request.user, pk=pk)))


class EvaluationChartView(APIView):
    @extend_schema(
        operation_id="bias_evaluations_chart",
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="the chart"),
            404: ERRORS[404],
            409: ERRORS[409],
        },
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        """The chart of the evaluation's metric by group (PNG). A chart whose blob left the artifact
        store or changed on disk answers 409 (``blob_missing``, ``blob_corrupt``)."""
        evaluation = selectors.audit_get(BiasEvaluation, user=request.user, pk=pk)
        if not evaluation.chart_digest:
            raise Conflict("no_chart_yet", f"bias evaluation {pk} has no chart yet ({evaluation.state})")
        try:
            chart = artifacts.read_blob(evaluation.chart_digest)
        except artifacts.ArtifactCorrupt as exc:
            raise Conflict("blob_corrupt", f"bias evaluation {pk}: its chart: {exc}") from None
        except (artifacts.ArtifactMissing, ValueError) as exc:  # ValueError: a name that is no digest
            raise Conflict("blob_missing", f"bias evaluation {pk}: its chart: {exc}") from None
        return HttpResponse(chart, content_type="image/png")


class _AuditCancelView(CommandView):
    audit_model: type[SecurityScan] | type[BiasEvaluation]
    input_serializer = ReasonInputSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> SecurityScan | BiasEvaluation:
        return selectors.audit_get(self.audit_model, user=request.user, pk=pk)

    def run(self, request: Request, audit: SecurityScan | BiasEvaluation, data: dict[str, Any]) -> Any:
        services.audit_cancel(actor=request.user, audit=audit, reason=data["reason"])
        return selectors.audit_get(self.audit_model, user=request.user, pk=audit.pk)

    def answer(self, audit: SecurityScan | BiasEvaluation) -> Any:
        return _scan_detail(audit) if isinstance(audit, SecurityScan) else _evaluation_detail(audit)


class ScanCancelView(_AuditCancelView):
    """Cancel a scan that has not started (waiting for approval, or queued): its pending approval
    requests are withdrawn with it. A running or finished scan answers 409."""

    operation_id = "security_scans_cancel"
    audit_model = SecurityScan
    output_serializer = ScanDetailSerializer


class EvaluationCancelView(_AuditCancelView):
    """Cancel an evaluation that has not started (waiting for approval, or queued): its pending
    approval requests are withdrawn with it. A running or finished evaluation answers 409."""

    operation_id = "bias_evaluations_cancel"
    audit_model = BiasEvaluation
    output_serializer = EvaluationDetailSerializer
