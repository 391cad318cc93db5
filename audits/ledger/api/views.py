from __future__ import annotations

import base64
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from audits.ledger import receipts, scopes, selectors
from audits.ledger.models import Entry
from audits.ledger.services import LedgerError
from audits.ledger.verification import known_verifiers
from audits.ledger.witness.selectors import cosigned_note
from common.api import ListView
from common.errors import DomainError, NotFound
from common.pagination import Pagination

MAX_INDEX = 2**63 - 1  # indexes and sizes are 64-bit signed integers in the database
_b64 = serializers.ListField(child=serializers.CharField())


class CanReadEntries(BasePermission):
    """Readers of the ledger (``ledger.view_entry``: the project roles that read it) and readers
    of every entry; which entries each reads is the selectors' answer (``entries_readable``)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return bool(user.has_perm("ledger.view_entry") or scopes.reads_every_entry(user))


def _int_param(request: Request, name: str, *, default: int | None = None, minimum: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise DomainError("invalid_input", f"{name} is required", fields={name: ["required"]})
        return default
    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses. The length
    # is checked before int(), which refuses numbers of more than 4300 digits with an error.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_INDEX)) or not minimum <= int(raw) <= MAX_INDEX:
        raise DomainError(
            "invalid_input",
            f"{name} must be an integer from {minimum} to {MAX_INDEX}",
            fields={name: [f"got {raw[:40]!r}"]},
        )
    return int(raw)


def _signed_size() -> int:
    latest = selectors.latest_checkpoint()
    return latest.tree_size if latest else 0


def _check_signed(size: int, name: str) -> None:
    signed = _signed_size()
    if size > signed:
        raise LedgerError(
            "beyond_checkpoint",
            f"{name}={size} is beyond the latest checkpoint (size {signed})",
            fields={name: ["too large"]},
        )


def _b64e(value: bytes) -> str:
    return base64.b64encode(value).decode()


class CheckpointView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_checkpoint",
        responses={(200, "text/plain"): OpenApiTypes.STR, 404: OpenApiResponse(description="no checkpoint yet")},
    )
    def get(self, request: Request) -> HttpResponse:
        """The latest signed checkpoint, as a C2SP signed note, with its witnesses' co-signatures."""
        latest = selectors.latest_checkpoint()
        if latest is None:
            raise NotFound("no_checkpoint", "no checkpoint has been signed yet")
        # With the witnesses' co-signature lines it has (C2SP tlog-cosignature); readers that do
        # not know a witness's key ignore its line, as signed notes require.
        return HttpResponse(cosigned_note(latest), content_type="text/plain; charset=utf-8")


class KeysView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(operation_id="ledger_keys", responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        """Every verifier key of the log (current and retired), one per line, C2SP signed-note form."""
        body = "".join(key.encode() + "\n" for key in known_verifiers())
        return HttpResponse(body, content_type="text/plain; charset=utf-8")


class InclusionProofSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    leaf_hash = serializers.CharField()
    root = serializers.CharField()
    proof = _b64


class InclusionProofView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_inclusion_proof",
        parameters=[OpenApiParameter("index", int, required=True), OpenApiParameter("tree_size", int)],
        responses=InclusionProofSerializer,
    )
    def get(self, request: Request) -> Response:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``tree_size`` (default: the
        latest checkpoint's), hashes in base64. Sizes beyond the latest checkpoint are refused."""
        size = _int_param(request, "tree_size", default=_signed_size(), minimum=1)
        index = _int_param(request, "index")
        _check_signed(size, "tree_size")
        if index >= size:
            raise LedgerError(
                "index_out_of_range", f"index {index} is not in a tree of size {size}", fields={"index": ["too large"]}
            )
        leaf, proof, root = selectors.inclusion_proof_with_root(index, size)
        data = {
            "index": index,
            "tree_size": size,
            "leaf_hash": _b64e(leaf),
            "root": _b64e(root),
            "proof": [_b64e(p) for p in proof],
        }
        return Response(data)


class ConsistencyProofSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    first_root = serializers.CharField()
    second_root = serializers.CharField()
    proof = _b64


class ConsistencyProofView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ledger_consistency_proof",
        parameters=[OpenApiParameter("first", int, required=True), OpenApiParameter("second", int)],
        responses=ConsistencyProofSerializer,
    )
    def get(self, request: Request) -> Response:
        """RFC 9162 consistency proof from tree size ``first`` to ``second`` (default: the latest
        checkpoint's). Requires 1 ≤ first ≤ second ≤ the latest checkpoint's size."""
        second = _int_param(request, "second", default=_signed_size(), minimum=1)
        first = _int_param(request, "first", minimum=1)
        if first > second:
            raise LedgerError(
                "invalid_range",
                f"first={first} is larger than second={second}",
                fields={"first": ["larger than second"]},
            )
        _check_signed(second, "second")
        proof, first_root, second_root = selectors.consistency_proof_with_roots(first, second)
        data = {
            "first": first, "second": second, "first_root": _b64e(first_root),
            "second_root": _b64e(second_root), "proof": [_b64e(p) for p in proof],
        }  # fmt: skip
        return Response(data)


class EntrySerializer(serializers.Serializer):
    index = serializers.IntegerField()
    leaf_hash = serializers.CharField()
    body_b64 = serializers.CharField()
    entry = serializers.JSONField()

    def to_representation(self, instance: Entry) -> dict[str, Any]:
        return selectors.entry_decoded(instance)  # the fields above, with sealed values shown as sealed


class EntryPagination(Pagination):
    """The envelope and parameters of every list, with ``offset`` an entry index: a page is the
    first ``limit`` entries the caller reads from index ``offset`` on (a seek on the primary key,
    never a scan past ``offset`` rows); ``next`` starts after its last entry and ``previous`` at
    the ``limit``-th readable entry before ``offset``. For a reader of every entry the indexes
    have no gap, so a page is the range ``offset`` to ``offset + limit`` and ``count`` the tree
    size; for a project's reader ``count`` is how many entries they read."""

    offset_query_description = "The index from which to read entries (default 0)."

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        self.queryset = queryset
        self.count = selectors.entries_readable_count(request.user)
        rows = list(queryset.filter(index__gte=self.offset)[: self.limit + 1])
        page = rows[: self.limit]
        self.next_offset = page[-1].index + 1 if len(rows) > self.limit else None
        return page

    def get_next_link(self) -> str | None:
        if self.next_offset is None:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        return replace_query_param(url, self.offset_query_param, self.next_offset)

    def get_previous_link(self) -> str | None:
        if self.offset <= 0:
            return None
        # The indexes of at most ``limit`` readable entries before ``offset``, nearest first.
        before = list(
            self.queryset.filter(index__lt=self.offset).order_by("-index").values_list("index", flat=True)[: self.limit]
        )
        if not before:
            return None
        url = replace_query_param(self.request.build_absolute_uri(), self.limit_query_param, self.limit)
        if len(before) < self.limit or before[-1] == 0:  # the first page
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, before[-1])


class EntryListView(ListView):
    """The entries the caller reads, by index: those of the projects where they are an auditor or a
    compliance officer, every entry for an organisation-wide auditor. ``?offset=`` is the index to
    read from (at most 1000 a page, 100 by default), ``next`` starts after the page's last entry;
    ``count`` is how many entries the caller reads. Sealed personal data is shown as sealed."""

    permission_classes = [CanReadEntries]
    pagination_class = EntryPagination
    serializer_class = EntrySerializer
    list_operation_id = "ledger_entries"

    def get_queryset(self) -> Any:
        return selectors.entries_readable(self.request.user)


class EntryDetailView(APIView):
    permission_classes = [CanReadEntries]

    @extend_schema(operation_id="ledger_entry", responses=EntrySerializer)
    def get(self, request: Request, index: int) -> Response:
        """One entry, if the caller reads it (another project's entry answers as no entry does)."""
        entry = selectors.entry_readable(request.user, index) if index <= MAX_INDEX else None
        if entry is None:
            raise NotFound("not_found", f"no entry with index {index}")
        return Response(selectors.entry_decoded(entry))


class EntryReceiptView(APIView):
    """The SCITT receipt of one entry (RFC 9942 COSE receipt, ``audits/ledger/receipts.py``)."""

    permission_classes = [CanReadEntries]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The receipt is COSE, not a rendered body: ``Accept: application/cose`` must not be
        # refused (406) for want of a renderer; errors still answer in JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="ledger_entry_receipt",
        responses={
            (200, receipts.MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="a tagged COSE_Sign1 (CBOR tag 18): alg EdDSA, kid, CWT claims iss/sub/iat, typ, "
                "vds 395 = RFC9162_SHA256 in the protected header; vdp 396 with one inclusion proof (-1) and "
                "the signed checkpoint of that tree size ('llmops-governance/checkpoint') in the unprotected "
                "header; the payload (the tree's root) detached",
            ),
            404: OpenApiResponse(description="no such entry, or not one the caller reads"),
            409: OpenApiResponse(description="the entry is not yet in a signed checkpoint (the message says when)"),
        },
    )
    def get(self, request: Request, index: int) -> HttpResponse:
        """The receipt proving entry ``index`` is in the tree of the latest signed checkpoint, for
        whoever reads the entry (another project's entry answers as no entry does). An entry past
        that checkpoint has none yet (409). Verify it offline with ``llmops_ledger_verify.receipt``
        or any COSE library, given the entry's bytes (``body_b64``) and the log's key."""
        entry = selectors.entry_readable(request.user, index) if index <= MAX_INDEX else None
        if entry is None:
            raise NotFound("not_found", f"no entry with index {index}")
        response = HttpResponse(receipts.entry_receipt(entry), content_type=receipts.MEDIA_TYPE)
        response["Content-Disposition"] = f'attachment; filename="ledger-entry-{index}.receipt.cose"'
        return response
