"""``GET /api/v1/inventory?at=TIME``: the inventory at a past time, rebuilt from the ledger, each
fact with its entry index and that entry's inclusion proof (``proofs``) against the latest signed
checkpoint. Who reads it: who reads the ledger's entries, each their projects' facts (an
organisation-wide auditor: all)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audits.ledger.api.views import CanReadEntries
from audits.reports.inventory.selectors import inventory_at
from common.errors import DomainError

AT_HELP = (
    "ISO 8601 date-time (2026-12-01T09:30:00Z, an offset, or a date for its midnight UTC); without a "
    "zone, UTC. Default: now. Not in the future."
)


def parse_at(raw: str | None, *, now: datetime | None = None) -> datetime:
    """``at`` as an aware date-time, or a 400 naming it: missing means now; garbled, or later than
    now, is refused. A ``+`` of an offset sent unencoded arrives as a space and is read back."""
    now = now or timezone.now()
    if raw is None or raw.strip() == "":
        return now
    text = raw.strip().replace(" ", "+") if "T" in raw else raw.strip()
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise DomainError(
            "invalid_input", f"at: {raw[:60]!r} is not an ISO 8601 date-time (e.g. 2026-12-01T09:30:00Z)",
            fields={"at": ["not an ISO 8601 date-time"]},
        ) from None  # fmt: skip
    try:  # in UTC, as the database compares it: a time at the edge of the calendar may not be
        at = (at.replace(tzinfo=UTC) if at.tzinfo is None else at).astimezone(UTC)
    except OverflowError:
        raise DomainError(
            "invalid_input", f"at: {raw[:60]!r} is outside the range of dates", fields={"at": ["out of range"]}
        ) from None
    if at > now:
        raise DomainError(
            "invalid_input", f"at: {at.isoformat()} is in the future (now is {now.isoformat()})",
            fields={"at": ["in the future"]},
        )  # fmt: skip
    return at


class _Link(serializers.Serializer):
    id = serializers.CharField(allow_null=True, help_text="the subject's id; null: no entry read carried the digest")
    digest = serializers.CharField(allow_null=True)
    ambiguous = serializers.BooleanField(help_text="more than one subject had this digest")


class _Decision(serializers.Serializer):
    decider = serializers.CharField()
    role = serializers.CharField()
    decision = serializers.CharField()
    reason = serializers.CharField()
    entry = serializers.IntegerField()


class _Subject(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()
    digest = serializers.CharField(allow_null=True)


class _Approval(serializers.Serializer):
    request = serializers.IntegerField()
    action = serializers.CharField()
    subject = _Subject()
    requester = serializers.CharField()
    requested_entry = serializers.IntegerField()
    state = serializers.CharField()
    entry = serializers.IntegerField(help_text="the entry that set the state")
    decisions = _Decision(many=True)
    break_glass_review = serializers.CharField(allow_null=True)
    break_glass_review_entry = serializers.IntegerField(allow_null=True)


class _Deployment(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    environment = serializers.CharField()
    runtime = serializers.CharField()
    requested_entry = serializers.IntegerField()
    state = serializers.CharField()
    entry = serializers.IntegerField(help_text="the entry that set the state")
    model_version = _Link(allow_null=True)
    approvals = serializers.ListField(child=serializers.IntegerField(), help_text="approval request ids")
    dataset_versions = serializers.ListField(child=serializers.CharField(allow_null=True))
    inherited_dataset_versions = serializers.ListField(child=serializers.CharField(allow_null=True))
    security_scans = serializers.ListField(child=serializers.CharField())
    bias_evaluations = serializers.ListField(child=serializers.CharField())


class _ModelVersion(serializers.Serializer):
    id = serializers.CharField()
    model = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    weights = serializers.CharField(allow_null=True)
    entry = serializers.IntegerField()
    base = _Link(allow_null=True)
    dataset_versions = _Link(many=True)
    fine_tune_run = serializers.CharField(allow_null=True)


class _Run(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    requested_entry = serializers.IntegerField()
    state = serializers.CharField()
    entry = serializers.IntegerField()
    base = _Link(allow_null=True)
    dataset_versions = _Link(many=True)
    output = _Link(allow_null=True)


class _DatasetVersion(serializers.Serializer):
    id = serializers.CharField()
    dataset = serializers.CharField()
    number = serializers.IntegerField(allow_null=True)
    content_sha256 = serializers.CharField(allow_null=True)
    entry = serializers.IntegerField()
    erased = serializers.BooleanField()
    erased_entry = serializers.IntegerField(allow_null=True)


class _Check(serializers.Serializer):
    id = serializers.CharField()
    profile = serializers.CharField()
    requested_entry = serializers.IntegerField()
    state = serializers.CharField()
    entry = serializers.IntegerField()
    verdict = serializers.CharField(allow_null=True)
    reasons = serializers.ListField(child=serializers.CharField())
    model_version = _Link()


class _Evaluation(_Check):
    dataset_version = _Link(allow_null=True)


class _Checkpoint(serializers.Serializer):
    tree_size = serializers.IntegerField()
    root = serializers.CharField(help_text="base64")
    note = serializers.CharField(help_text="the signed C2SP checkpoint note")
    created_at = serializers.DateTimeField()


class _Proof(serializers.Serializer):
    covered = serializers.BooleanField(help_text="false: the entry is past the latest checkpoint")
    leaf_hash = serializers.CharField(required=False, help_text="base64")
    tree_size = serializers.IntegerField(required=False)
    path = serializers.ListField(child=serializers.CharField(), required=False, help_text="RFC 9162 audit path")
    href = serializers.CharField(required=False, help_text="the same proof from the ledger's API")


class InventorySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    entries_read = serializers.IntegerField(help_text="the entries replayed (of the actions the inventory reads)")
    integrated = serializers.IntegerField(help_text="the ledger's integrated size when read: entries below it only")
    last_entry = serializers.IntegerField(allow_null=True)
    checkpoint = _Checkpoint(allow_null=True)
    deployments = _Deployment(many=True)
    approvals = _Approval(many=True)
    model_versions = _ModelVersion(many=True)
    fine_tune_runs = _Run(many=True)
    dataset_versions = _DatasetVersion(many=True)
    security_scans = _Check(many=True)
    bias_evaluations = _Evaluation(many=True)
    proofs = serializers.DictField(child=_Proof(), help_text="by entry index: every entry a fact cites")


class InventoryView(APIView):
    permission_classes = [CanReadEntries]

    @extend_schema(
        operation_id="inventory_at",
        parameters=[OpenApiParameter("at", str, required=False, description=AT_HELP)],
        responses={
            200: InventorySerializer,
            400: OpenApiResponse(description="at is not an ISO 8601 date-time, or is in the future"),
            401: OpenApiResponse(description="not signed in"),
            403: OpenApiResponse(description="you read no ledger entries"),
        },
    )
    def get(self, request: Request) -> Response:
        """What was deployed where at ``at``, on which approvals, trained on which dataset versions,
        with which scans and evaluations: rebuilt from the ledger's entries made by then (those
        the caller reads), each fact citing its entry, each entry's proof in ``proofs``."""
        at = parse_at(request.query_params.get("at"))
        return Response(inventory_at(user=request.user, at=at).as_dict())
