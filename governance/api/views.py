from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import CommandView, ListView, ReasonInputSerializer, validated
from common.errors import Conflict, DomainError, NotFound, PermissionDenied
from common.ratelimit import ApiRateLimit
from governance.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenRevokeSerializer,
    ApiTokenSerializer,
    ApprovalRequestSerializer,
    ApproveInputSerializer,
    BreakGlassInputSerializer,
    BreakGlassReviewSerializer,
    MeSerializer,
    ProjectSerializer,
    ReviewCloseSerializer,
    SubmitSerializer,
)
from governance.models import ApiToken, ApprovalRequest, BreakGlassReview, Project
from governance.selectors import (
    api_token_get,
    api_token_list,
    approval_get,
    approval_history,
    approval_list,
    break_glass_reviews,
    project_list,
    project_roles_of,
    service_accounts_managed,
)
from governance.services import (
    api_token_create_for_service_account,
    api_token_create_own,
    api_token_revoke,
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


class ProjectListView(ListView):
    """Projects the caller holds a role in (all of them, for platform admins)."""

    serializer_class = ProjectSerializer

    def get_queryset(self) -> QuerySet[Project]:
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


class ApprovalListView(ListView):
    """Approval requests in your projects, newest first; ``?inbox=1``: what you can decide now.
    Filters: ``state``, ``subject_type``, ``project`` (slug)."""

    serializer_class = ApprovalRequestSerializer
    list_operation_id = "approvals_list"
    filters = {"state": "state", "subject_type": "subject_type", "project": "project__slug"}
    query_parameters = [OpenApiParameter("inbox", bool)]
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"GET": "approvals.list"}

    def get_queryset(self) -> QuerySet[ApprovalRequest]:
        inbox = self.request.query_params.get("inbox") in ("1", "true")
        return approval_list(user=self.request.user, inbox=inbox).order_by("-created_at")


class ApprovalDetailView(APIView):
    @extend_schema(operation_id="approvals_retrieve", responses={200: ApprovalRequestSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """One request; an approved one is first held against its subject as it is now (an
        approval whose subject changed lapses, and the answer says why)."""
        from governance.services.approvals import approval_request_recheck

        found = approval_get(user=request.user, pk=pk)
        if approval_request_recheck(found):
            found = approval_get(user=request.user, pk=pk)
        return Response(ApprovalRequestSerializer(found).data)


class _DecisionView(CommandView):
    output_serializer = ApprovalRequestSerializer
    errors = ERRORS
    denied_event = "approval.decision.denied"  # a refusal is logged as this (common/security_log.py)
    throttle_classes = [ApiRateLimit]
    rate_limit_groups = {"POST": "approvals.decide"}

    def target(self, request: Request, pk: int) -> int:
        return pk  # the services answer 404 for requests the caller may not see

    def answer(self, decided: ApprovalRequest) -> Any:
        return ApprovalRequestSerializer(approval_history(decided)).data


class ApprovalApproveView(_DecisionView):
    """Fill one slot of a pending request with your approval (a reason is required)."""

    operation_id = "approvals_approve"
    input_serializer = ApproveInputSerializer

    def run(self, request: Request, pk: int, data: dict[str, Any]) -> ApprovalRequest:
        return approval_request_decide(
            actor=request.user, request_id=pk, decision="approve", reason=data["reason"], role=data.get("role")
        )


class ApprovalRejectView(_DecisionView):
    """Reject a pending request (a reason is required); the request closes."""

    operation_id = "approvals_reject"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, pk: int, data: dict[str, Any]) -> ApprovalRequest:
        return approval_request_decide(actor=request.user, request_id=pk, decision="reject", reason=data["reason"])


class ApprovalWithdrawView(_DecisionView):
    """Withdraw your own pending request."""

    operation_id = "approvals_withdraw"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, pk: int, data: dict[str, Any]) -> ApprovalRequest:
        return approval_request_withdraw(actor=request.user, request_id=pk, reason=data["reason"])


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
        context = {k: data[k] for k in ("environment", "risk_tier", "deployment", "use") if k in data}
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


class BreakGlassReviewListView(ListView):
    """Break-glass reviews in your projects (open and overdue first)."""

    serializer_class = BreakGlassReviewSerializer

    def get_queryset(self) -> QuerySet[BreakGlassReview]:
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


class ApiTokenListView(ListView):
    """Your API tokens, newest first, with their state (live, expired, revoked), expiry and last
    use; never the token itself. ``?user=USERNAME``: that user's tokens instead, where you manage
    them (a service account you own; a person or a service account working in a project you are
    platform admin of; anyone's for a global admin), else an empty list."""

    serializer_class = ApiTokenSerializer
    list_operation_id = "tokens_list"
    filters = {"user": "user__username"}

    def get_queryset(self) -> QuerySet[ApiToken]:
        tokens = api_token_list(user=self.request.user)
        return tokens if self.request.query_params.get("user") else tokens.filter(user=self.request.user)

    @extend_schema(
        operation_id="tokens_create", request=ApiTokenCreateSerializer,
        responses={
            201: ApiTokenCreatedSerializer,
            400: OpenApiResponse(description="a blank or too long name, an expiry outside 1 to API_TOKEN_MAX_DAYS, "
                                             "or a user who is no service account you manage"),
            403: OpenApiResponse(description="asked with a token (a new token needs a verified admin session), "
                                             "or by a service account"),
        },
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        """Create a token for yourself, or with ``user`` for a service account you manage (you own
        it, or it works in a project you are platform admin of), expiring in ``expires_in_days``
        (default 90, at most API_TOKEN_MAX_DAYS). The answer holds the token, once: it is stored
        only as a digest.

        Only from an admin session that passed the second factor: a request authenticated by a
        token is refused, so a leaked token cannot mint others that outlive it."""
        if isinstance(request.auth, ApiToken):
            raise PermissionDenied(
                "session_required",
                "a token cannot create tokens: create one in the admin (API tokens, Add API token), signed in "
                "with your password and second factor, or call this with that session",
            )
        data = validated(ApiTokenCreateSerializer, request)
        holder = data.get("user")
        if holder is None or holder == request.user.get_username():
            row, token = api_token_create_own(
                actor=request.user, name=data["name"], expires_in_days=data["expires_in_days"]
            )
        else:
            account = service_accounts_managed(user=request.user).filter(user__username=holder).first()
            if account is None:
                raise DomainError(
                    "invalid_input", f"no service account {holder!r} that you manage",
                    fields={"user": ["a service account you manage, or leave it out for a token of your own"]},
                )  # fmt: skip
            row, token = api_token_create_for_service_account(
                actor=request.user, account=account.user, name=data["name"], expires_in_days=data["expires_in_days"]
            )
        return Response({**ApiTokenSerializer(row).data, "token": token}, status=201)


class ApiTokenRevokeView(CommandView):
    """Revoke a token: yours, one of a person working in a project you are platform admin of, or
    one of a service account you manage (see the list). It stops authenticating at once; 409 if it
    was already revoked. ``reason`` (optional) says why, in the ledger entry."""

    operation_id = "tokens_revoke"
    input_serializer = ApiTokenRevokeSerializer
    output_serializer = ApiTokenSerializer
    errors = {
        404: OpenApiResponse(description="no such token, or not one you may see"),
        409: OpenApiResponse(description="the token was already revoked"),
    }

    def target(self, request: Request, prefix: str) -> ApiToken:
        return api_token_get(user=request.user, prefix=prefix)

    def post(self, request: Request, **kwargs: Any) -> Response:
        # The body is optional: a bare POST (no JSON body, as before ``reason`` existed) revokes
        # without one, as a command without input treats a body that is not JSON (``no_input``).
        token = self.target(request, **kwargs)
        try:
            data = validated(ApiTokenRevokeSerializer, request)
        except exceptions.UnsupportedMediaType:
            data = {}
        return Response(self.answer(self.run(request, token, data)), status=self.status_code)

    def run(self, request: Request, token: ApiToken, data: dict[str, Any]) -> ApiToken:
        if not api_token_revoke(actor=request.user, token=token, reason=data.get("reason", "")):
            raise Conflict(
                "already_revoked", f"token {token.prefix} was already revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC"
            )
        return token
