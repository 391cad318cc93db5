from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import no_input, validated
from common.errors import DomainError
from governance.api.views import ERRORS
from governance.permissions import require_project_role
from governance.roles import Role
from registry import selectors as registry_selectors
from registry.models import ModelVersion
from serving import selectors, services
from serving.api.serializers import (
    DeploymentCreateSerializer,
    DeploymentDetailSerializer,
    DeploymentSerializer,
    FeedbackInputSerializer,
    FeedbackSerializer,
    ManifestSerializer,
    MonitoringQuerySerializer,
    MonitoringSerializer,
    ReasonSerializer,
)


class ProjectDeploymentsView(APIView):
    @extend_schema(operation_id="deployments_list", responses={200: DeploymentSerializer(many=True), 404: ERRORS[404]})
    def get(self, request: Request, slug: str) -> Response:
        project = registry_selectors.project_get(user=request.user, slug=slug)
        return Response(DeploymentSerializer(selectors.deployment_list(user=request.user).filter(project=project),
                                             many=True).data)  # fmt: skip

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
        )  # fmt: skip
        return Response(DeploymentDetailSerializer(deployment).data, status=status.HTTP_201_CREATED)


class DeploymentDetailView(APIView):
    @extend_schema(operation_id="deployments_retrieve", responses={200: DeploymentDetailSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """A deployment with its grants, live state and inference-log summaries."""
        return Response(DeploymentDetailSerializer(selectors.deployment_get(user=request.user, pk=pk)).data)


class DeploymentPromoteView(APIView):
    @extend_schema(
        operation_id="deployments_promote", request=None, responses={201: DeploymentDetailSerializer, **ERRORS}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Ask for this live staging deployment in production: a new request, submitted at once
        (422 naming the evidence when the production policy's evidence does not hold; 409
        ``already_promoted``, naming it, while a production deployment of this configuration is
        still requested, starting, handed off or live)."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        no_input(request)
        promoted = services.deployment_promote(actor=request.user, deployment=deployment)
        return Response(DeploymentDetailSerializer(promoted).data, status=status.HTTP_201_CREATED)


class DeploymentRollbackView(APIView):
    @extend_schema(operation_id="deployments_rollback", request=ReasonSerializer,
                   responses={200: DeploymentDetailSerializer, **ERRORS})  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Put the previous version back in service (platform admins); answers the restored one."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        reason = validated(ReasonSerializer, request)["reason"]
        restored = services.deployment_rollback(actor=request.user, deployment=deployment, reason=reason)
        return Response(DeploymentDetailSerializer(restored).data)


class DeploymentRetireView(APIView):
    @extend_schema(operation_id="deployments_retire", request=ReasonSerializer,
                   responses={200: DeploymentDetailSerializer, **ERRORS})  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Stop serving and retire the deployment (platform admins); a deployment still waiting
        for approval has its pending approval requests withdrawn."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        reason = validated(ReasonSerializer, request)["reason"]
        return Response(DeploymentDetailSerializer(services.deployment_retire(actor=request.user,
                                                                               deployment=deployment,
                                                                               reason=reason)).data)  # fmt: skip


class DeploymentFeedbackView(APIView):
    @extend_schema(operation_id="deployments_feedback", request=FeedbackInputSerializer,
                   responses={201: FeedbackSerializer, **ERRORS})  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Rate one completion (any member of the project but an auditor, who is read-only: 403),
        naming it by the ``X-Request-Id`` the server answered with (400 when this deployment's
        inference log has no such request). One rating per person and request; no free text is
        kept."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        data = validated(FeedbackInputSerializer, request)
        feedback = services.deployment_feedback_give(
            actor=request.user, deployment=deployment, request_id=data["request_id"], rating=data["rating"],
            category=data["category"],
        )  # fmt: skip
        return Response(FeedbackSerializer(feedback).data, status=status.HTTP_201_CREATED)


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


class DeploymentManifestsView(APIView):
    @extend_schema(
        operation_id="deployments_manifests", responses={200: ManifestSerializer(many=True), 404: ERRORS[404]}
    )
    def get(self, request: Request, pk: int) -> Response:
        """The manifests rendered for the serving platform (``SERVING_PLATFORM`` kserve or vllm),
        newest first: each carries the signed grant; empty for locally served deployments."""
        deployment = selectors.deployment_get(user=request.user, pk=pk)
        return Response(ManifestSerializer(deployment.manifests.select_related("grant"), many=True).data)
