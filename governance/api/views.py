from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import validated
from common.errors import NotFound
from common.ratelimit import ApiRateLimit
from governance.api.serializers import (
    ApprovalRequestSerializer,
    ApproveInputSerializer,
    BreakGlassInputSerializer,
    BreakGlassReviewSerializer,
    DecisionInputSerializer,
    MeSerializer,
    ProjectSerializer,
    ReviewCloseSerializer,
    SubmitSerializer,
)
from governance.models import Project
from governance.selectors import (
    approval_get,
    approval_history,
    approval_list,
    break_glass_reviews,
    project_list,
    project_roles_of,
)
from governance.services import (
    approval_break_glass,
    approval_request_decide,
    approval_request_submit,
    approval_request_withdraw,
    break_glass_review_close,
)


class MeView(APIView):
    """Who the caller is, and which roles it holds in which projects."""

    @extend_schema(responses=MeSerializer, operation_id="me")
    def get(self, request: Request) -> Response:
        user = request.user
        projects = [{"project": project.slug, "roles": roles} for project, roles in project_roles_of(user=user)]
        data = {
            "username": user.get_username(),
            "kind": "service_account" if hasattr(user, "service_account") else "person",
            "is_staff": user.is_staff,
            "projects": projects,
        }
        return Response(MeSerializer(data).data)


class ProjectListView(generics.ListAPIView):
    """Projects the caller holds a role in (all of them, for platform admins)."""

    serializer_class = ProjectSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return project_list(user=self.request.user)


class ProjectDetailView(generics.RetrieveAPIView):
    serializer_class = ProjectSerializer
    lookup_field = "slug"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        # A project the caller may not see answers 404, exactly like one that does not exist.
        return project_list(user=self.request.user) if self.request.user else Project.objects.none()


ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role may not decide this request"),
    404: OpenApiResponse(description="no such request, or not in a project of yours"),
    409: OpenApiResponse(description="the request is closed, expired, its slots filled, or the subject changed"),
    422: OpenApiResponse(description="a policy rule forbids it (self-approval, one slot per person, evidence)"),
}


class ApprovalListView(generics.ListAPIView):
    """Approval requests in your projects; ``?inbox=1``: what you can decide now. Filters:
    ``state``, ``subject_type``, ``project`` (slug)."""

    serializer_class = ApprovalRequestSerializer
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"GET": "approvals.list"}

    @extend_schema(
        operation_id="approvals_list",
        parameters=[
            OpenApiParameter("inbox", bool), OpenApiParameter("state", str),
            OpenApiParameter("subject_type", str), OpenApiParameter("project", str),
        ],
    )  # fmt: skip
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        queryset = approval_list(user=self.request.user, inbox=params.get("inbox") in ("1", "true"))
        if params.get("state"):
            queryset = queryset.filter(state=params["state"])
        if params.get("subject_type"):
            queryset = queryset.filter(subject_type=params["subject_type"])
        if params.get("project"):
            queryset = queryset.filter(project__slug=params["project"])
        return queryset.order_by("-created_at")


class ApprovalDetailView(APIView):
    @extend_schema(operation_id="approvals_retrieve", responses={200: ApprovalRequestSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ApprovalRequestSerializer(approval_get(user=request.user, pk=pk)).data)


class _DecisionView(APIView):
    decision = ""
    denied_event = "approval.decision.denied"  # a refusal is logged as this (common/security_log.py)
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"POST": "approvals.decide"}

    def post(self, request: Request, pk: int) -> Response:
        # The services answer 404 for requests the caller may not see.
        data = validated(ApproveInputSerializer if self.decision == "approve" else DecisionInputSerializer, request)
        if self.decision == "withdraw":
            decided = approval_request_withdraw(actor=request.user, request_id=pk, reason=data["reason"])
        else:
            decided = approval_request_decide(
                actor=request.user, request_id=pk, decision=self.decision, reason=data["reason"], role=data.get("role")
            )
        return Response(ApprovalRequestSerializer(approval_history(decided)).data)


class ApprovalApproveView(_DecisionView):
    decision = "approve"

    @extend_schema(
        operation_id="approvals_approve",
        request=ApproveInputSerializer,
        responses={200: ApprovalRequestSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Fill one slot of a pending request with your approval (a reason is required)."""
        return super().post(request, pk)


class ApprovalRejectView(_DecisionView):
    decision = "reject"

    @extend_schema(
        operation_id="approvals_reject",
        request=DecisionInputSerializer,
        responses={200: ApprovalRequestSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Reject a pending request (a reason is required); the request closes."""
        return super().post(request, pk)


class ApprovalWithdrawView(_DecisionView):
    decision = "withdraw"

    @extend_schema(
        operation_id="approvals_withdraw",
        request=DecisionInputSerializer,
        responses={200: ApprovalRequestSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Withdraw your own pending request."""
        return super().post(request, pk)


class _SubjectSubmitSchema(AutoSchema):
    def get_operation_id(self) -> str:
        return f"{self.view.subject_type}s_submit"  # one view, one operation per subject type


class SubjectSubmitView(APIView):
    subject_type = ""
    schema = _SubjectSubmitSchema()
    denied_event = "approval.request.denied"

    @extend_schema(request=SubmitSerializer, responses={201: ApprovalRequestSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Open an approval request for an action on this subject, under the matching policy."""
        from governance.subjects import subject_type as get_type

        kind = get_type(self.subject_type)
        obj = kind.get(str(pk))
        if obj is None or not project_list(user=request.user).filter(pk=kind.project(obj).pk).exists():
            raise NotFound("not_found", f"no {self.subject_type} {pk}")
        data = validated(SubmitSerializer, request)
        context = {k: data[k] for k in ("environment", "risk_tier") if k in data}
        created = approval_request_submit(
            actor=request.user, subject_type=self.subject_type, subject_id=str(pk), action=data["action"],
            context=context, comment=data["comment"],
        )  # fmt: skip
        return Response(ApprovalRequestSerializer(approval_get(user=request.user, pk=created.pk)).data, status=201)


class ApprovalBreakGlassView(APIView):
    denied_event = "approval.decision.denied"
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"POST": "approvals.decide"}

    @extend_schema(
        operation_id="approvals_break_glass", request=BreakGlassInputSerializer,
        responses={200: ApprovalRequestSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Emergency approval by a platform admin of the project: flagged in the ledger, and a
        compliance officer must review it within BREAK_GLASS_REVIEW_HOURS."""
        approval_get(user=request.user, pk=pk)
        justification = validated(BreakGlassInputSerializer, request)["justification"]
        approval_break_glass(actor=request.user, request_id=pk, justification=justification)
        return Response(ApprovalRequestSerializer(approval_get(user=request.user, pk=pk)).data)


class BreakGlassReviewListView(generics.ListAPIView):
    """Break-glass reviews in your projects (open and overdue first)."""

    serializer_class = BreakGlassReviewSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return break_glass_reviews(user=self.request.user)


class BreakGlassReviewCloseView(APIView):
    denied_event = "approval.decision.denied"

    @extend_schema(
        operation_id="break_glass_reviews_close", request=ReviewCloseSerializer,
        responses={200: BreakGlassReviewSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Close a break-glass review as upheld, or revoked (the approval then stops counting)."""
        if not break_glass_reviews(user=request.user).filter(pk=pk).exists():
            raise NotFound("not_found", f"no break-glass review {pk}")
        data = validated(ReviewCloseSerializer, request)
        review = break_glass_review_close(actor=request.user, review_id=pk, **data)
        return Response(BreakGlassReviewSerializer(review).data)
