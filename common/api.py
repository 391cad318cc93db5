"""What every API endpoint shares: one JSON shape for every error (``{"error": {"code", "message",
"fields"}}``; answers that refuse the caller, 401, 403, 404 and refused commands, are logged as
security events), the input fields and checks (ids, ledgered text, the reason input, refusal of
unknown fields, text and whole numbers of their own JSON types), and the one base of every list (:class:`ListView`).

The input boundary is two steps: the body's JSON (size, depth, numbers the ledger records
exactly: ``common/parsers.py``), then the declared input schema (:func:`validated`)."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db.models import QuerySet
from django.http import Http404, QueryDict
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, generics, parsers, serializers, views
from rest_framework.response import Response

from common import security_log
from common.errors import DomainError
from common.pagination import Pagination
from common.parsers import SAFE_INTEGER_MAX, BodyTooLarge, BoundedJSONParser
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
    BodyTooLarge: "body_too_large",
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
    elif isinstance(exc, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        exc = body_refusal(exc)
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500 handler logs it; the client sees no stack trace
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        names = ", ".join(sorted(detail))
        body = error_body(code, f"invalid input: {names}", detail)
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        body = error_body(code, _media_type_message(context))
    else:
        body = error_body(code, str(exc.detail))
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    security_log.api_refusal(context, status=exc.status_code, code=code, domain=False)
    return Response(body, status=exc.status_code, headers=headers)


def _media_type_message(context: dict[str, Any]) -> str:
    """A 415 names the Content-Type the body came with (DRF's own message quotes an absent one as
    ``""``) and the ones the operation takes."""
    request = context.get("request")
    given = getattr(request, "content_type", "") or ""
    takes = ", ".join(sorted({parser.media_type for parser in getattr(request, "parsers", ())}))
    came = (
        f"a body of Content-Type {given.split(';')[0].strip()!r}" if given else "a body without a Content-Type header"
    )
    return f"this operation takes {takes or 'no body'}, not {came}"


def body_refusal(exc: Exception) -> exceptions.APIException:
    """What Django's own request limits answer under the API (its default is an HTML 400 page): a
    body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413, too many form fields or files a 400."""
    if isinstance(exc, RequestDataTooBig):
        return BodyTooLarge(min(settings.API_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    return exceptions.ParseError(f"the body has too many form fields or files: {exc}")


# Ids are 64-bit signed integers in the database; a JSON body holds only the integers the ledger
# records exactly (common/parsers.py), far more ids than a database will ever hand out.
MAX_ID = SAFE_INTEGER_MAX


def id_field(**kwargs: Any) -> serializers.IntegerField:
    """An input naming a row by id: 1 to :data:`MAX_ID` (a larger one is a 400, not a 500)."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


LEDGERED_TEXT_HELP = (
    "Recorded as written in the append-only ledger, for good: refer to a data subject by the "
    "request's id, never by name or contact details."
)


_JSON_KINDS = {
    bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object",
}  # fmt: skip


NOT_TEXT = "Must be text (a JSON string), not {kind}."
NOT_INTEGER = "Must be a whole number (a JSON number), not {kind}."


def _kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


class TextField(serializers.CharField):
    """A text input that takes JSON strings only. DRF's ``CharField`` turns a number into its
    digits (a reason of ``5`` would be recorded as ``"5"``): a client that sent a number sent
    something else than what it meant, so it gets a 400 naming the field instead.
    (:func:`validated` holds every ``CharField`` of an input to the same rule.)"""

    default_error_messages = {"not_text": NOT_TEXT}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_text", kind=_kind(data))
        return super().to_internal_value(data)


def wrong_type_errors(field: serializers.Field, value: Any) -> Any:
    """The errors, shaped as ``field`` would report them, of every place in ``value`` where
    ``field`` (a ``CharField`` or an ``IntegerField``, or a list, dict or serializer holding some)
    takes text or a whole number and ``value`` holds another JSON type; ``None`` when there is
    none. DRF turns a number into its digits for a ``CharField`` and text into a number for an
    ``IntegerField``: the API takes each as its own JSON type only, whatever the serializer."""
    if value is None:
        return None  # allow_null decides
    if isinstance(field, serializers.CharField):
        return None if isinstance(value, str) else [NOT_TEXT.format(kind=_kind(value))]
    if isinstance(field, serializers.IntegerField):  # a number that is not whole: DRF's own message
        return [NOT_INTEGER.format(kind=_kind(value))] if isinstance(value, (str, bool)) else None
    children: dict[Any, Any] = {}
    if isinstance(field, (serializers.ListField, serializers.ListSerializer)) and isinstance(value, list):
        children = {index: wrong_type_errors(field.child, item) for index, item in enumerate(value)}
    elif isinstance(field, serializers.DictField) and isinstance(value, dict):
        children = {key: wrong_type_errors(field.child, item) for key, item in value.items()}
    elif isinstance(field, serializers.Serializer) and isinstance(value, dict):
        children = {
            name: wrong_type_errors(child, value[name])
            for name, child in field.fields.items()
            if not child.read_only and name in value
        }
    return {key: errors for key, errors in children.items() if errors} or None


def ledgered_text(*, max_length: int = 2000, **kwargs: Any) -> TextField:
    """A free-text input (a reason, a comment, a note) that the service records in the ledger as
    written. The schema says so to whoever fills it in (the admin's forms too)."""
    if not kwargs.get("allow_blank"):
        kwargs.setdefault("min_length", 1)  # blank is refused either way; this puts it in the schema
    return TextField(max_length=max_length, help_text=LEDGERED_TEXT_HELP, **kwargs)


# The one reason input: every command that records why it was done (reject, withdraw, cancel, roll
# back, retire, extend, release, set a quota...) takes it, or extends it with fields of its own.
# Required, a JSON string, 1 to 2000 characters once trimmed.
class ReasonInputSerializer(serializers.Serializer):
    reason = ledgered_text()


READ_ONLY_OR_UNKNOWN = "not accepted here: read-only or unknown"


def validated(serializer_class: type, request: Any) -> Any:
    """The validated input of ``request`` for ``serializer_class``; a 400 naming the fields if not.

    A field the serializer does not take as input (unknown, or read-only: ``state``, ``owner``,
    ``digest``, ``project``...) is refused with a 400 that names it, never silently ignored: a
    client must not believe it set what the server did not (mass assignment, OWASP API3)."""
    _bounded(request)
    serializer = serializer_class(data=request.data)
    if hasattr(request.data, "keys"):
        writable = {name for name, field in serializer.fields.items() if not field.read_only}
        refused = sorted(str(name) for name in request.data.keys() if name not in writable)
        if refused:
            raise exceptions.ValidationError({name: [READ_ONLY_OR_UNKNOWN] for name in refused})
    # A form's values are text already; a JSON body's are what the client typed.
    mistyped = None if isinstance(request.data, QueryDict) else wrong_type_errors(serializer, request.data)
    if mistyped:
        serializer.is_valid()
        raise exceptions.ValidationError({**serializer.errors, **mistyped})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _bounded(request: Any) -> None:
    """Parse JSON through the input boundary even where a view names DRF's own ``JSONParser``
    (``parser_classes = [JSONParser]``), before the body is first read."""
    chosen = getattr(request, "parsers", None)
    if chosen:
        request.parsers = [BoundedJSONParser() if type(p) is parsers.JSONParser else p for p in chosen]


def no_input(request: Any) -> dict[str, Any]:
    """For a command that takes no input: a body field is refused like a read-only one (400)."""
    _bounded(request)
    try:
        data = request.data
    except exceptions.UnsupportedMediaType:
        return {}  # not JSON: the API reads no field from such a body, here or anywhere
    if hasattr(data, "keys") and data.keys():
        raise exceptions.ValidationError({str(name): [READ_ONLY_OR_UNKNOWN] for name in sorted(data.keys())})
    return {}


def _own_docstring(view: Any, base: type) -> str:
    """The docstring of ``view``'s class or a class between it and ``base``, never ``base``'s own
    (drf-spectacular would describe every operation with the base's)."""
    for cls in type(view).__mro__:
        if cls is base:
            break
        if cls.__doc__:
            return inspect.cleandoc(cls.__doc__)
    return ""


class _ListSchema(AutoSchema):
    """The ``GET`` of a :class:`ListView`: its operation id and query parameters, from the view."""

    def get_operation_id(self) -> str:
        if self.method == "GET" and self.view.list_operation_id:
            return str(self.view.list_operation_id)
        return str(super().get_operation_id())

    def get_description(self) -> str:
        if self.method != "GET":  # a command's own docstring: the class's describes the list
            return get_doc(getattr(self.view, self.method.lower(), None))
        return _own_docstring(self.view, ListView)

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self.method == "GET":
            parameters += [OpenApiParameter(name, str, description="exact match") for name in self.view.filters]
            parameters += self.view.query_parameters
        return parameters


class ListView(generics.ListAPIView):
    """The one base of every list endpoint (as NetBox gives every list the same base viewset):
    ``GET`` answers a page of :meth:`get_queryset` in :class:`Pagination`'s envelope
    ``{"count", "next", "previous", "results"}``, and the schema says so. A subclass may add
    commands (``post``: create) with their own input and output serializers.

    :attr:`filters` maps a query parameter to the field it matches exactly (an empty value filters
    nothing); :attr:`query_parameters` documents the other parameters :meth:`get_queryset` reads.
    A queryset without an order is ordered by primary key: pages of an unordered query may repeat
    or skip rows."""

    pagination_class = Pagination
    schema = _ListSchema()
    list_operation_id: ClassVar[str] = ""
    filters: ClassVar[dict[str, str]] = {}
    query_parameters: ClassVar[list[OpenApiParameter]] = []

    def filter_queryset(self, queryset: Any) -> Any:
        params = self.request.query_params
        for name, field in self.filters.items():
            if params.get(name):
                queryset = queryset.filter(**{field: params[name]})
        if isinstance(queryset, QuerySet) and not queryset.ordered:
            queryset = queryset.order_by("pk")
        return queryset


class _CommandSchema(AutoSchema):
    """The operation of a :class:`CommandView`, from the view's attributes."""

    def get_operation_id(self) -> str:
        return str(self.view.operation_id or super().get_operation_id())

    def get_request_serializer(self) -> Any:
        return self.view.input_serializer

    def get_response_serializers(self) -> Any:
        return {self.view.status_code: self.view.output_serializer, **self.view.errors}

    def get_description(self) -> str:
        return _own_docstring(self.view, CommandView)


class CommandView(views.APIView):
    """The one base of a command on one object (``POST …/{id}/cancel``, one view per command): it
    finds the object (:meth:`target`: a selector of what the caller may see, so a hidden object is
    a 404 before the body is read), takes :attr:`input_serializer` (``None``: the command takes no
    input, and a body field is refused), calls one service (:meth:`run`) and answers its result as
    :attr:`output_serializer` shows it (:meth:`answer`), with :attr:`status_code`.

    The schema is built from the same attributes: :attr:`operation_id`, the input, the output and
    :attr:`errors`; the subclass's docstring describes the operation."""

    operation_id: ClassVar[str] = ""
    input_serializer: ClassVar[type[serializers.Serializer] | None] = None
    output_serializer: ClassVar[type[serializers.Serializer]]
    status_code: ClassVar[int] = 200
    errors: ClassVar[dict[int, Any]] = {}
    schema = _CommandSchema()

    def target(self, request: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def run(self, request: Any, target: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def answer(self, result: Any) -> Any:
        return self.output_serializer(result).data

    def post(self, request: Any, **kwargs: Any) -> Response:
        target = self.target(request, **kwargs)
        data = validated(self.input_serializer, request) if self.input_serializer else no_input(request)
        return Response(self.answer(self.run(request, target, data)), status=self.status_code)
