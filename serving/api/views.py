from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import MAX_ID, CommandView, ListView, ReasonInputSerializer, validated
from common.errors import DomainError, NotFound
from governance.api.serializers import ApprovalRequestSerializer
from governance.permissions import require_project_role
from governance.roles import Role
from registry import selectors as registry_selectors
from registry.models import ModelVersion
from serving import selectors, services
from serving.api.serializers import (
    AlertSerializer,
    ClientCredentialIssuedSerializer,
    ClientCredentialIssueSerializer,
    ClientCredentialSerializer,
    DeploymentCreateSerializer,
    DeploymentDetailSerializer,
    DeploymentSerializer,
    FeedbackExportInputSerializer,
    FeedbackInputSerializer,
    FeedbackSerializer,
    ManifestSerializer,
    MonitoringQuerySerializer,
    MonitoringSerializer,
)
from serving.models import Deployment, DeploymentAlert, DeploymentClientCredential, DeploymentManifest

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such deployment, model version or project, or not in a project of yours"),
    409: OpenApiResponse(description="the deployment's current state does not allow this"),
    422: OpenApiResponse(description="a policy or domain rule forbids it (the message names the rule)"),
}


class ProjectDeploymentsView(ListView):
    """The project's deployments, newest first."""

    serializer_class = DeploymentSerializer
    list_operation_id = "deployments_list"

    def get_queryset(self) -> QuerySet[Deployment]:
        project = registry_selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.deployment_list(user=self.request.user).filter(project=project)

    @extend_schema(
        operation_id="deployments_create", request=DeploymentCreateSerializer,
        responses={201: DeploymentDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Request a deployment (ML engineers); submit it next (``…/submit``, action
        ``deployment.deploy``). Once approved, a grant is signed and the server starts."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        require_project_role(request.user, project, {Role.ML_ENGINEER}, "requesting a deployment")
        data = validated(DeploymentCreateSerializer, request)
        version = ModelVersion.objects.filter(pk=data["model_version"], model__project=project).first()
        if version is None:
            raise DomainError("invalid_input", f"model_version: no model version {data['model_version']} in {slug}")
        deployment = services.deployment_request(
            actor=request.user, model_version=version, name=data["name"], environment=data["environment"],
            target=data["target"], guard=data["guard"], runtime=data["runtime"],
            keep_transcripts=data["keep_transcripts"], transparency=data.get("transparency"),
            ai_system=data.get("ai_system"),
        )  # fmt: skip
        return Response(DeploymentDetailSerializer(deployment).data, status=status.HTTP_201_CREATED)


class DeploymentDetailView(APIView):
    @extend_schema(operation_id="deployments_retrieve", responses={200: DeploymentDetailSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """A deployment with its grants, live state and inference-log summaries."""
        return Response(DeploymentDetailSerializer(selectors.deployment_get(user=request.user, pk=pk)).data)


class _DeploymentCommand(CommandView):
    output_serializer = DeploymentDetailSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> Deployment:
        return selectors.deployment_get(user=request.user, pk=pk)


class DeploymentPromoteView(_DeploymentCommand):
    """Ask for this live staging deployment in production: a new request, submitted at once (422
    naming the evidence when the production policy's evidence does not hold; 409
    ``already_promoted``, naming it, while a production deployment of this configuration is still
    requested, starting, handed off or live)."""

    operation_id = "deployments_promote"
    status_code = status.HTTP_201_CREATED

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Deployment:
        return services.deployment_promote(actor=request.user, deployment=deployment)


class DeploymentRollbackView(_DeploymentCommand):
    """Put the previous version back in service (platform admins); answers the restored one."""

    operation_id = "deployments_rollback"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Deployment:
        return services.deployment_rollback(actor=request.user, deployment=deployment, reason=data["reason"])


class DeploymentRetireView(_DeploymentCommand):
    """Stop serving and retire the deployment (platform admins); a deployment still waiting for
    approval has its pending approval requests withdrawn."""

    operation_id = "deployments_retire"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Deployment:
        return services.deployment_retire(actor=request.user, deployment=deployment, reason=data["reason"])


class DeploymentFeedbackView(_DeploymentCommand):
    """Rate one completion (any member of the project but an auditor, who is read-only: 403),
    naming it by the ``X-Request-Id`` the server answered with (400 when this deployment's inference
    log has no such request). One rating per person and request; no free text is kept."""

    operation_id = "deployments_feedback"
    input_serializer = FeedbackInputSerializer
    output_serializer = FeedbackSerializer
    status_code = status.HTTP_201_CREATED

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Any:
        return services.deployment_feedback_give(
            actor=request.user, deployment=deployment, request_id=data["request_id"], rating=data["rating"],
            category=data["category"], correction=data["correction"],
        )  # fmt: skip


class DeploymentExportFeedbackView(_DeploymentCommand):
    """Ask to export the feedback on this deployment (and on the deployments of its name) as a
    preference dataset version of ``dataset``, a dataset of the same project (ML engineers and
    data stewards): answers the approval request for ``deployment.export_feedback`` (a data
    steward approves, and a compliance officer too in production); once approved the worker
    registers the pairs. 409 ``no_transcripts`` for a deployment that keeps no transcripts."""

    operation_id = "deployments_export_feedback"
    input_serializer = FeedbackExportInputSerializer
    output_serializer = ApprovalRequestSerializer
    status_code = status.HTTP_201_CREATED

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Any:
        from serving.services.preference import EXPORTERS, deployment_feedback_export_request

        # The role first, as the service checks it: who may not export learns nothing of datasets.
        require_project_role(request.user, deployment.project, EXPORTERS, "exporting feedback")
        try:
            dataset = registry_selectors.dataset_get(user=request.user, pk=data["dataset"])
        except NotFound:
            message = f"no dataset {data['dataset']} in project {deployment.project.slug}"
            raise DomainError("invalid_input", f"dataset: {message}", fields={"dataset": [message]}) from None
        return deployment_feedback_export_request(
            actor=request.user, deployment=deployment, dataset=dataset, comment=data["comment"]
        )

    def answer(self, approval: Any) -> Any:
        from governance.selectors import approval_get

        return ApprovalRequestSerializer(approval_get(user=self.request.user, pk=approval.pk)).data


class DeploymentMonitoringView(APIView):
    @extend_schema(
        operation_id="deployments_monitoring", parameters=[MonitoringQuerySerializer],
        responses={200: MonitoringSerializer, 400: ERRORS[400], 404: ERRORS[404]},
    )  # fmt: skip
    def get(self, request: Request, pk: int) -> Response:
        """Per window of the inference log: requests, error rates, latency p50/p95/p99, the prompt
        length distribution and guard hits, with the drift (PSI) of each window against the first,
        and the feedback given."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        query = MonitoringQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window_s = query.validated_data["window_s"]
        return Response(selectors.deployment_monitoring(deployment=deployment, window_s=window_s))


class DeploymentManifestsView(ListView):
    """The manifests rendered for the serving platform (``SERVING_PLATFORM`` kserve or vllm),
    newest first: each carries the signed grant; empty for locally served deployments."""

    serializer_class = ManifestSerializer
    list_operation_id = "deployments_manifests"

    def get_queryset(self) -> QuerySet[DeploymentManifest]:
        deployment = selectors.deployment_get(user=self.request.user, pk=self.kwargs["pk"])
        return deployment.manifests.select_related("grant")


class DeploymentClientCredentialsView(ListView):
    """The client credentials its model servers accept or accepted: those issued for the
    deployment's name and environment (through this version or another), newest first, with
    their state (``live``, ``expired``, ``revoked``). The credential itself is never shown again."""

    serializer_class = ClientCredentialSerializer
    list_operation_id = "deployments_client_credentials_list"

    def get_queryset(self) -> QuerySet[DeploymentClientCredential]:
        deployment = selectors.deployment_get(user=self.request.user, pk=self.kwargs["pk"])
        return selectors.client_credential_list(user=self.request.user, deployment=deployment)

    @extend_schema(
        operation_id="deployments_client_credentials_issue", request=ClientCredentialIssueSerializer,
        responses={201: ClientCredentialIssuedSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Issue a client credential for the deployment's name and environment (platform admins
        of its project): answered once, stored only as its SHA-256. Callers send it to the model
        server as ``Authorization: Bearer <credential>``; it expires in ``expires_in_days``."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        data = validated(ClientCredentialIssueSerializer, request)
        row, credential = services.deployment_client_credential_issue(
            actor=request.user, deployment=deployment, name=data["name"], expires_in_days=data["expires_in_days"]
        )
        row.credential = credential  # type: ignore[attr-defined]
        return Response(ClientCredentialIssuedSerializer(row).data, status=status.HTTP_201_CREATED)


class ClientCredentialRevokeView(CommandView):
    """Revoke a client credential (platform admins of the deployment's project): the running
    servers of its deployment stop accepting it as soon as their client list is rewritten, at once
    after the commit and at the latest within one supervision period (15 s). Revoking a revoked
    credential changes nothing and answers it as it is."""

    operation_id = "client_credentials_revoke"
    output_serializer = ClientCredentialSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> DeploymentClientCredential:
        return selectors.client_credential_get(user=request.user, pk=pk)

    def run(self, request: Request, credential: DeploymentClientCredential, data: dict[str, Any]) -> Any:
        services.deployment_client_credential_revoke(actor=request.user, credential=credential)
        return credential


class DeploymentPauseView(_DeploymentCommand):
    """Pause a live deployment (platform admins): its server stops until it is resumed (409
    ``not_live`` otherwise)."""

    operation_id = "deployments_pause"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Deployment:
        return services.deployment_pause(actor=request.user, deployment=deployment, reason=data["reason"])


class DeploymentResumeView(_DeploymentCommand):
    """Serve a paused deployment again on its grant (platform admins), once its alerts are
    resolved: 409 ``alerts_open`` naming them, ``grant_expired`` or ``not_approved`` when a new
    deployment request is needed, ``not_paused``."""

    operation_id = "deployments_resume"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, deployment: Deployment, data: dict[str, Any]) -> Deployment:
        return services.deployment_resume(actor=request.user, deployment=deployment, reason=data["reason"])


class DeploymentAlertsView(ListView):
    """Alerts (reviews opened by monitoring thresholds) of the deployments you may see, newest
    first; ``?deployment=``, ``?state=`` (open, acknowledged, resolved) and ``?metric=`` filter."""

    serializer_class = AlertSerializer
    list_operation_id = "deployment_alerts_list"
    filters = {"deployment": "deployment_id", "state": "state", "metric": "metric"}

    def get_queryset(self) -> QuerySet[DeploymentAlert]:
        deployment = self.request.query_params.get("deployment") or ""
        if deployment and not (deployment.isascii() and deployment.isdigit() and 1 <= int(deployment) <= MAX_ID):
            raise exceptions.ValidationError({"deployment": [f"must be a deployment id (1 to {MAX_ID})"]})
        return services.deployment_alert_list(user=self.request.user)


class DeploymentAlertDetailView(APIView):
    @extend_schema(operation_id="deployment_alerts_retrieve", responses={200: AlertSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """One alert: the metric, its value and bound, the windows, the rule and its review."""
        return Response(AlertSerializer(services.deployment_alert_get(user=request.user, pk=pk)).data)


class _AlertCommand(CommandView):
    output_serializer = AlertSerializer
    errors = ERRORS
    input_serializer = ReasonInputSerializer

    def target(self, request: Request, pk: int) -> DeploymentAlert:
        return services.deployment_alert_get(user=request.user, pk=pk)


class DeploymentAlertAcknowledgeView(_AlertCommand):
    """Say that you look into an open alert (platform admins and compliance officers of the
    project; 409 ``alert_not_open`` once acknowledged or resolved)."""

    operation_id = "deployment_alerts_acknowledge"

    def run(self, request: Request, alert: DeploymentAlert, data: dict[str, Any]) -> DeploymentAlert:
        return services.deployment_alert_acknowledge(actor=request.user, alert=alert, reason=data["reason"])


class DeploymentAlertResolveView(_AlertCommand):
    """Close an alert with what was found and done (platform admins and compliance officers of the
    project; 409 ``alert_resolved``). A paused deployment is resumed separately (``…/resume``)."""

    operation_id = "deployment_alerts_resolve"

    def run(self, request: Request, alert: DeploymentAlert, data: dict[str, Any]) -> DeploymentAlert:
        return services.deployment_alert_resolve(actor=request.user, alert=alert, reason=data["reason"])
