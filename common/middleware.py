"""HTTP middleware that belongs to no app."""

from __future__ import annotations

from collections.abc import Callable

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from common.api import error_body
from common.request_context import accept_request_id, set_request_id
from common.security_log import security_event

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Give every request an id, expose it on ``request.request_id`` and echo it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        # Kept until the response is finished (not reset here): Django logs 4xx/5xx responses
        # after the middleware chain has returned, and those lines must carry the id too.
        set_request_id(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class SecurityEventMiddleware:
    """Log the refusals the API exception handler never sees: a 401 or 403 from Django itself (the
    admin, CSRF, the second factor) and every 429, whoever answered it (common/security_log.py)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        status = response.status_code
        if status == 429:
            event = "ratelimit.exceeded"
        elif status in (401, 403) and not getattr(response, "exception", False):
            event = "authz.denied"  # DRF's answers (``exception`` set) were logged by the handler
        else:
            return response
        data = getattr(response, "data", None)  # a DRF answer names its code ("throttled", "locked_out")
        error = data.get("error") if isinstance(data, dict) else None
        reason = error.get("code") if isinstance(error, dict) and error.get("code") else f"http_{status}"
        security_event(
            event, outcome="denied", reason=str(reason), request=request, user=getattr(request, "user", None),
            status=status,
        )  # fmt: skip
        return response


class NulQueryMiddleware:
    """Refuse a query string holding a NUL character with a 400 that says so.

    No parameter of the service can hold one, and PostgreSQL refuses it in any text it is given:
    a filter (``?state=%00``) or an admin search would otherwise end in a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.GET.lists()
        names = sorted({name for name, values in query if "\x00" in name or any("\x00" in v for v in values)})
        if not names:
            return self.get_response(request)
        message = f"a NUL character in the query parameter(s): {', '.join(repr(n) for n in names)}"
        if request.path.startswith("/api/"):
            fields = {name: ["NUL character"] for name in names}
            return JsonResponse(error_body("invalid_input", message, fields), status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _forget_request_id(**_: object) -> None:
    set_request_id(None)


request_finished.connect(_forget_request_id, dispatch_uid="common.middleware.forget_request_id")
