"""The data-subject request API: one view per command, each calling one service; reads through
the selectors (404 outside the caller's projects, 403 for a member who is neither compliance
officer nor auditor)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits.privacy import selectors, services
from audits.privacy.api.serializers import (
    AccessPackageSerializer,
    CompleteSerializer,
    DenySerializer,
    LegalHoldPlaceSerializer,
    LegalHoldSerializer,
    MethodSerializer,
    ModelReviewCloseSerializer,
    ModelReviewSerializer,
    RequestDetailSerializer,
    RequestLogRowSerializer,
    RequestReceiveSerializer,
    RequestSerializer,
)
from audits.privacy.models import DataSubjectRequest, LegalHold, ModelReview
from common.api import CommandView, ListView, ReasonInputSerializer
from common.errors import DomainError
from governance.models import Project
from registry import selectors as registry_selectors

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such request or legal hold, or not in a project of yours"),
    409: OpenApiResponse(description="the request's or hold's current state does not allow this"),
    422: OpenApiResponse(description="a policy or domain rule forbids it (the message names the rule)"),
}


def _datetime(field: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DomainError(
            "invalid_input", f"{field}: not an ISO 8601 datetime: {value!r}", fields={field: ["ISO 8601"]}
        ) from None
    if parsed.tzinfo is None:
        raise DomainError(
            "invalid_input",
            f"{field}: must be timezone-aware; {value!r} has no UTC offset (add Z or +01:00)",
            fields={field: ["UTC offset required"]},
        )
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise DomainError(
            "invalid_input", f"{field}: {value!r} is out of range in UTC", fields={field: ["out of range"]}
        ) from None
    return parsed


class RequestListView(ListView):
    """Data-subject requests of the projects where you are compliance officer or auditor, the
    nearest deadline first. Filters: ``project`` (slug), ``state``, ``regime``, ``kind``,
    ``deadline_flag``."""

    serializer_class = RequestSerializer
    list_operation_id = "privacy_requests_list"
    filters = {
        "project": "project__slug", "state": "state", "regime": "regime", "kind": "kind",
        "deadline_flag": "deadline_flag",
    }  # fmt: skip

    def get_queryset(self) -> QuerySet[DataSubjectRequest]:
        return selectors.request_list(user=self.request.user).order_by("respond_by", "pk")


class RequestReceiveView(CommandView):
    """Record a request (compliance officers). The identifiers are sealed in the ledger vault;
    responses show their keyed hashes only."""

    operation_id = "privacy_requests_receive"
    input_serializer = RequestReceiveSerializer
    output_serializer = RequestDetailSerializer
    status_code = status.HTTP_201_CREATED
    errors = ERRORS

    def target(self, request: Request, slug: str) -> Project:
        return registry_selectors.project_get(user=request.user, slug=slug)

    def run(self, request: Request, project: Project, data: dict[str, Any]) -> Any:
        return services.dsr_receive(
            actor=request.user, project=project, regime=data["regime"], kind=data["kind"], channel=data["channel"],
            received_at=_datetime("received_at", data["received_at"]),
            identifiers=[dict(i) for i in data["identifiers"]], tz=data["tz"],
        )  # fmt: skip


class RequestLogView(ListView):
    """The CCPA §7101 request log of the project (compliance officers, auditors), oldest first."""

    serializer_class = RequestLogRowSerializer
    list_operation_id = "privacy_request_log"
    query_parameters = [OpenApiParameter("since", str, description="ISO 8601; default: every request kept")]

    def get_queryset(self) -> list[dict[str, Any]]:
        project = registry_selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        since = self.request.query_params.get("since")
        return selectors.request_log(
            user=self.request.user, project=project, since=_datetime("since", since) if since else None
        )


class RequestDetailView(APIView):
    @extend_schema(operation_id="privacy_requests_retrieve", responses={200: RequestDetailSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """A request with its deadlines, findings (ids) and what its erasure did."""
        return Response(RequestDetailSerializer(selectors.request_get(user=request.user, pk=pk)).data)


class _RequestCommand(CommandView):
    output_serializer = RequestDetailSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> DataSubjectRequest:
        return selectors.request_get(user=request.user, pk=pk)


class ConfirmReceiptView(_RequestCommand):
    """Record that receipt was confirmed to the requester (CCPA: within 10 business days)."""

    operation_id = "privacy_requests_confirm_receipt"

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_confirm_receipt(actor=request.user, request=dsr)


class VerifyIdentityView(_RequestCommand):
    """Record how the requester's identity was verified (the method, not the evidence)."""

    operation_id = "privacy_requests_verify_identity"
    input_serializer = MethodSerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_verify_identity(actor=request.user, request=dsr, method=data["method"])


class SearchView(_RequestCommand):
    """Search the subject index and lineage: dataset versions, model versions, deployments."""

    operation_id = "privacy_requests_search"

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_search(actor=request.user, request=dsr)


class ExtendView(_RequestCommand):
    """The one extension allowed, with the reason told to the requester, before the first deadline."""

    operation_id = "privacy_requests_extend"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_extend(actor=request.user, request=dsr, reason=data["reason"])


class DenyView(_RequestCommand):
    """Deny the request, with the basis (kept in the request log)."""

    operation_id = "privacy_requests_deny"
    input_serializer = DenySerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_deny(actor=request.user, request=dsr, basis=data["basis"], nature=data["nature"])


class WithdrawView(_RequestCommand):
    """Record that the requester withdrew the request."""

    operation_id = "privacy_requests_withdraw"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_withdraw(actor=request.user, request=dsr, reason=data["reason"])


class EraseView(_RequestCommand):
    """Erase the person: new dataset versions without their records, old blobs deleted, model
    reviews opened, the vault key shredded. 422 naming the legal hold when one applies."""

    operation_id = "privacy_requests_erase"

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_erase(actor=request.user, request=dsr)


class CompleteView(_RequestCommand):
    """Close the request with the nature of the response sent."""

    operation_id = "privacy_requests_complete"
    input_serializer = CompleteSerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        return services.dsr_complete(actor=request.user, request=dsr, nature=data["nature"])


class AccessPackageView(_RequestCommand):
    """The Art. 15 / right-to-know package, returned here only; the ledger keeps its SHA-256."""

    operation_id = "privacy_requests_access_package"
    output_serializer = AccessPackageSerializer

    def run(self, request: Request, dsr: DataSubjectRequest, data: dict[str, Any]) -> Any:
        package, digest = services.dsr_access_package(actor=request.user, request=dsr)
        return {"sha256": digest, "package": package}


class LegalHoldListView(ListView):
    """Legal holds of the projects where you are compliance officer or auditor, newest first."""

    serializer_class = LegalHoldSerializer
    list_operation_id = "privacy_legal_holds_list"

    def get_queryset(self) -> QuerySet[LegalHold]:
        return selectors.legal_hold_list(user=self.request.user).order_by("-placed_at", "-pk")


class LegalHoldPlaceView(CommandView):
    """Stop erasure in the project: of everyone, or of one person (identifiers, or a request's)."""

    operation_id = "privacy_legal_holds_place"
    input_serializer = LegalHoldPlaceSerializer
    output_serializer = LegalHoldSerializer
    status_code = status.HTTP_201_CREATED
    errors = ERRORS

    def target(self, request: Request, slug: str) -> Project:
        return registry_selectors.project_get(user=request.user, slug=slug)

    def run(self, request: Request, project: Project, data: dict[str, Any]) -> Any:
        dsr = selectors.request_get(user=request.user, pk=data["request"]) if data["request"] else None
        return services.legal_hold_place(
            actor=request.user, project=project, reason=data["reason"],
            identifiers=[dict(i) for i in data["identifiers"]] or None, request=dsr,
        )  # fmt: skip


class LegalHoldReleaseView(CommandView):
    operation_id = "privacy_legal_holds_release"
    input_serializer = ReasonInputSerializer
    output_serializer = LegalHoldSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> LegalHold:
        return selectors.legal_hold_get(user=request.user, pk=pk)

    def run(self, request: Request, hold: LegalHold, data: dict[str, Any]) -> Any:
        return services.legal_hold_release(actor=request.user, hold=hold, reason=data["reason"])


class ModelReviewListView(ListView):
    """Reviews of model versions trained on erased data, open ones first; ``?open=1``: the open
    ones only."""

    serializer_class = ModelReviewSerializer
    list_operation_id = "privacy_model_reviews_list"
    query_parameters = [OpenApiParameter("open", bool)]

    def get_queryset(self) -> QuerySet[ModelReview]:
        queryset = selectors.model_review_list(user=self.request.user)
        if self.request.query_params.get("open") in ("1", "true"):
            queryset = queryset.filter(closed_at__isnull=True)
        return queryset.order_by("closed_at", "opened_at", "pk")


class ModelReviewCloseView(CommandView):
    """Close a review: retrained, retired, or kept with the reason documented."""

    operation_id = "privacy_model_reviews_close"
    input_serializer = ModelReviewCloseSerializer
    output_serializer = ModelReviewSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> ModelReview:
        return selectors.model_review_get(user=request.user, pk=pk)

    def run(self, request: Request, review: ModelReview, data: dict[str, Any]) -> Any:
        return services.model_review_close(actor=request.user, review=review, **data)
