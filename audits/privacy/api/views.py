"""The data-subject request API: one view per command, each calling one service; reads through
the selectors (404 outside the caller's projects, 403 for a member who is neither compliance
officer nor auditor)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
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
    PrivacyReasonSerializer,
    RequestDetailSerializer,
    RequestLogRowSerializer,
    RequestReceiveSerializer,
    RequestSerializer,
)
from common.api import no_input, validated
from common.errors import DomainError
from governance.api.views import ERRORS
from registry import selectors as registry_selectors


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


class RequestListView(generics.ListAPIView):
    """Data-subject requests of the projects where you are compliance officer or auditor.
    Filters: ``project`` (slug), ``state``, ``regime``, ``kind``, ``deadline_flag``."""

    serializer_class = RequestSerializer

    @extend_schema(
        operation_id="privacy_requests_list",
        parameters=[OpenApiParameter(name, str) for name in ("project", "state", "regime", "kind", "deadline_flag")],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        queryset = selectors.request_list(user=self.request.user)
        params = self.request.query_params
        for name in ("state", "regime", "kind", "deadline_flag"):
            if params.get(name):
                queryset = queryset.filter(**{name: params[name]})
        if params.get("project"):
            queryset = queryset.filter(project__slug=params["project"])
        return queryset.order_by("respond_by", "pk")


class RequestReceiveView(APIView):
    @extend_schema(
        operation_id="privacy_requests_receive", request=RequestReceiveSerializer,
        responses={201: RequestDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Record a request (compliance officers). The identifiers are sealed in the ledger vault;
        responses show their keyed hashes only."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        data = validated(RequestReceiveSerializer, request)
        dsr = services.dsr_receive(
            actor=request.user, project=project, regime=data["regime"], kind=data["kind"], channel=data["channel"],
            received_at=_datetime("received_at", data["received_at"]),
            identifiers=[dict(i) for i in data["identifiers"]], tz=data["tz"],
        )  # fmt: skip
        return Response(RequestDetailSerializer(dsr).data, status=status.HTTP_201_CREATED)


class RequestLogView(APIView):
    @extend_schema(
        operation_id="privacy_request_log",
        parameters=[OpenApiParameter("since", str, description="ISO 8601; default: every request kept")],
        responses={200: RequestLogRowSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]},
    )
    def get(self, request: Request, slug: str) -> Response:
        """The CCPA §7101 request log of the project (compliance officers, auditors)."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        since = request.query_params.get("since")
        rows = selectors.request_log(
            user=request.user, project=project, since=_datetime("since", since) if since else None
        )
        return Response(RequestLogRowSerializer(rows, many=True).data)


class RequestDetailView(APIView):
    @extend_schema(operation_id="privacy_requests_retrieve", responses={200: RequestDetailSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """A request with its deadlines, findings (ids) and what its erasure did."""
        return Response(RequestDetailSerializer(selectors.request_get(user=request.user, pk=pk)).data)


class _Command(APIView):
    """A command on one request: parse, call the service, answer the request."""

    input_serializer: type | None = None

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def post(self, request: Request, pk: int) -> Response:
        dsr = selectors.request_get(user=request.user, pk=pk)
        data = validated(self.input_serializer, request) if self.input_serializer else no_input(request)
        return Response(RequestDetailSerializer(self.call(request, dsr, data)).data)


def _command_schema(name: str, serializer: type | None) -> Any:
    return extend_schema(
        operation_id=f"privacy_requests_{name}", request=serializer, responses={200: RequestDetailSerializer, **ERRORS}
    )


class ConfirmReceiptView(_Command):
    @_command_schema("confirm_receipt", None)
    def post(self, request: Request, pk: int) -> Response:
        """Record that receipt was confirmed to the requester (CCPA: within 10 business days)."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_confirm_receipt(actor=request.user, request=dsr)


class VerifyIdentityView(_Command):
    input_serializer = MethodSerializer

    @_command_schema("verify_identity", MethodSerializer)
    def post(self, request: Request, pk: int) -> Response:
        """Record how the requester's identity was verified (the method, not the evidence)."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_verify_identity(actor=request.user, request=dsr, method=data["method"])


class SearchView(_Command):
    @_command_schema("search", None)
    def post(self, request: Request, pk: int) -> Response:
        """Search the subject index and lineage: dataset versions, model versions, deployments."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_search(actor=request.user, request=dsr)


class ExtendView(_Command):
    input_serializer = PrivacyReasonSerializer

    @_command_schema("extend", PrivacyReasonSerializer)
    def post(self, request: Request, pk: int) -> Response:
        """The one extension allowed, with the reason told to the requester, before the first deadline."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_extend(actor=request.user, request=dsr, reason=data["reason"])


class DenyView(_Command):
    input_serializer = DenySerializer

    @_command_schema("deny", DenySerializer)
    def post(self, request: Request, pk: int) -> Response:
        """Deny the request, with the basis (kept in the request log)."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_deny(actor=request.user, request=dsr, basis=data["basis"], nature=data["nature"])


class WithdrawView(_Command):
    input_serializer = PrivacyReasonSerializer

    @_command_schema("withdraw", PrivacyReasonSerializer)
    def post(self, request: Request, pk: int) -> Response:
        """Record that the requester withdrew the request."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_withdraw(actor=request.user, request=dsr, reason=data["reason"])


class EraseView(_Command):
    @_command_schema("erase", None)
    def post(self, request: Request, pk: int) -> Response:
        """Erase the person: new dataset versions without their records, old blobs deleted, model
        reviews opened, the vault key shredded. 422 naming the legal hold when one applies."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_erase(actor=request.user, request=dsr)


class CompleteView(_Command):
    input_serializer = CompleteSerializer

    @_command_schema("complete", CompleteSerializer)
    def post(self, request: Request, pk: int) -> Response:
        """Close the request with the nature of the response sent."""
        return super().post(request, pk)

    def call(self, request: Request, dsr: Any, data: dict[str, Any]) -> Any:
        return services.dsr_complete(actor=request.user, request=dsr, nature=data["nature"])


class AccessPackageView(APIView):
    @extend_schema(
        operation_id="privacy_requests_access_package", request=None,
        responses={200: AccessPackageSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """The Art. 15 / right-to-know package, returned here only; the ledger keeps its SHA-256."""
        dsr = selectors.request_get(user=request.user, pk=pk)
        no_input(request)
        package, digest = services.dsr_access_package(actor=request.user, request=dsr)
        return Response({"sha256": digest, "package": package})


class LegalHoldListView(generics.ListAPIView):
    """Legal holds of the projects where you are compliance officer or auditor."""

    serializer_class = LegalHoldSerializer

    @extend_schema(operation_id="privacy_legal_holds_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.legal_hold_list(user=self.request.user).order_by("-placed_at")


class LegalHoldPlaceView(APIView):
    @extend_schema(
        operation_id="privacy_legal_holds_place", request=LegalHoldPlaceSerializer,
        responses={201: LegalHoldSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Stop erasure in the project: of everyone, or of one person (identifiers, or a request's)."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        data = validated(LegalHoldPlaceSerializer, request)
        dsr = selectors.request_get(user=request.user, pk=data["request"]) if data["request"] else None
        hold = services.legal_hold_place(
            actor=request.user, project=project, reason=data["reason"],
            identifiers=[dict(i) for i in data["identifiers"]] or None, request=dsr,
        )  # fmt: skip
        return Response(LegalHoldSerializer(hold).data, status=status.HTTP_201_CREATED)


class LegalHoldReleaseView(APIView):
    @extend_schema(
        operation_id="privacy_legal_holds_release", request=PrivacyReasonSerializer,
        responses={200: LegalHoldSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        hold = selectors.legal_hold_get(user=request.user, pk=pk)
        reason = validated(PrivacyReasonSerializer, request)["reason"]
        return Response(LegalHoldSerializer(services.legal_hold_release(actor=request.user, hold=hold,
                                                                        reason=reason)).data)  # fmt: skip


class ModelReviewListView(generics.ListAPIView):
    """Reviews of model versions trained on erased data; ``?open=1``: the open ones."""

    serializer_class = ModelReviewSerializer

    @extend_schema(operation_id="privacy_model_reviews_list", parameters=[OpenApiParameter("open", bool)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        queryset = selectors.model_review_list(user=self.request.user)
        if self.request.query_params.get("open") in ("1", "true"):
            queryset = queryset.filter(closed_at__isnull=True)
        return queryset.order_by("closed_at", "opened_at")


class ModelReviewCloseView(APIView):
    @extend_schema(
        operation_id="privacy_model_reviews_close", request=ModelReviewCloseSerializer,
        responses={200: ModelReviewSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Close a review: retrained, retired, or kept with the reason documented."""
        review = selectors.model_review_get(user=request.user, pk=pk)
        data = validated(ModelReviewCloseSerializer, request)
        review = services.model_review_close(actor=request.user, review=review, **data)
        return Response(ModelReviewSerializer(review).data)
