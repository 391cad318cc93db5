"""Turns every API error into one JSON shape: ``{"error": {"code", "message", "fields"}}``; answers
that refuse the caller (401, 403, 404, and refused commands) are logged as security events."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from common import security_log
from common.errors import DomainError
from common.ratelimit import LockedOut

_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    LockedOut: "locked_out",  # before Throttled, its base class
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "malformed_request",
    exceptions.ValidationError: "invalid_input",
}


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        security_log.api_refusal(context, status=exc.status_code, code=exc.code, domain=True)
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500 handler logs it; the client sees no stack trace
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        names = ", ".join(sorted(detail))
        body = error_body(code, f"invalid input: {names}", detail)
    else:
        body = error_body(code, str(exc.detail))
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    security_log.api_refusal(context, status=exc.status_code, code=code, domain=False)
    return Response(body, status=exc.status_code, headers=headers)


MAX_ID = 2**63 - 1  # ids are 64-bit signed integers in the database


def id_field(**kwargs: Any) -> serializers.IntegerField:
    """An input naming a row by id: 1 to :data:`MAX_ID` (a larger one is a 400, not a 500)."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


LEDGERED_TEXT_HELP = (
    "Recorded as written in the append-only ledger, for good: refer to a data subject by the "
    "request's id, never by name or contact details."
)


def ledgered_text(*, max_length: int = 2000, **kwargs: Any) -> serializers.CharField:
    """A free-text input (a reason, a comment, a note) that the service records in the ledger as
    written. The schema says so to whoever fills it in (the admin's forms too)."""
    return serializers.CharField(max_length=max_length, help_text=LEDGERED_TEXT_HELP, **kwargs)


READ_ONLY_OR_UNKNOWN = "not accepted here: read-only or unknown"


def validated(serializer_class: type, request: Any) -> Any:
    """The validated input of ``request`` for ``serializer_class``; a 400 naming the fields if not.

    A field the serializer does not take as input (unknown, or read-only: ``state``, ``owner``,
    ``digest``, ``project``...) is refused with a 400 that names it, never silently ignored: a
    client must not believe it set what the server did not (mass assignment, OWASP API3)."""
    serializer = serializer_class(data=request.data)
    if hasattr(request.data, "keys"):
        writable = {name for name, field in serializer.fields.items() if not field.read_only}
        refused = sorted(str(name) for name in request.data.keys() if name not in writable)
        if refused:
            raise exceptions.ValidationError({name: [READ_ONLY_OR_UNKNOWN] for name in refused})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def no_input(request: Any) -> dict[str, Any]:
    """For a command that takes no input: a body field is refused like a read-only one (400)."""
    try:
        data = request.data
    except exceptions.UnsupportedMediaType:
        return {}  # not JSON: the API reads no field from such a body, here or anywhere
    if hasattr(data, "keys") and data.keys():
        raise exceptions.ValidationError({str(name): [READ_ONLY_OR_UNKNOWN] for name in sorted(data.keys())})
    return {}


class Pagination(LimitOffsetPagination):
    """``?limit=`` and ``?offset=`` for every list: ASCII digits, ``limit`` 1 to :attr:`max_limit`,
    ``offset`` within the database's 64-bit integers; anything else is a 400 naming the parameter
    (never a silent default, never a 500 from an integer the database cannot hold)."""

    default_limit = 100
    max_limit = 1000
    max_offset = 2**62  # offset + limit must still fit in a signed 64-bit integer

    def get_limit(self, request: Any) -> int:
        return self._parameter(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Any) -> int:
        return self._parameter(request, self.offset_query_param, 0, 0, self.max_offset)

    @staticmethod
    def _parameter(request: Any, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
            raise exceptions.ValidationError({name: [f"an integer from {low} to {high}"]})
        return int(raw)
