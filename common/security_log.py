"""Security events as OWASP ASVS 5.0 V16 asks: every login, every failed authorisation and every
denied decision, one JSON line each on the ``security`` logger.

Each line carries when (``time``, UTC), who (``user_id``, ``username``: "anonymous" when nobody
was authenticated), what (``event``, ``outcome``, ``reason``: a stable code) and where
(``http_method``, ``path`` without its query string, ``client_ip``: ``REMOTE_ADDR``, or behind
``TRUSTED_PROXY_COUNT`` proxies the address they saw, and ``request_id``).

Events: ``auth.login.succeeded``, ``auth.login.failed``, ``auth.logout`` (``auth_method``
session or token; a session's ``reason`` says how it signed in: ``password``, or ``oidc`` for
single sign-on, whose failures carry ``auth_method`` oidc and the reason the sign-in method gave),
``authz.denied`` (401, 403, and 404 for what the caller may not see: a hidden object and a missing
one answer alike, so both are logged), ``approval.decision.denied`` and
``approval.request.denied`` (a view's ``denied_event``; other refused commands log
``request.denied``), ``ratelimit.exceeded`` (429), ``auth.mfa.succeeded`` and ``auth.mfa.failed``
(the admin's second factor: verification and enrolment, ``auth_method`` totp). The admin's actions
log their refusals as the API does (``refusal``).

Never logged: a password, a token or any part of it (a token is named by its row id), a session
id, a cookie, the Authorization header, a request body, a query string. A login that fails for a
name no account holds logs a keyed hash of the name, not the name: people type their password, or
someone else's e-mail address, into the username field. A failed login for an existing account
logs that account's id and username, as a successful one does.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.utils.crypto import salted_hmac

logger = logging.getLogger("security")

ANONYMOUS = "anonymous"
_PATH_MAX = 300
# DomainError statuses that mean "the service refused this command" rather than "you may not".
_REFUSAL_STATUSES = frozenset({403, 409, 422})


def username_digest(username: str) -> str:
    """A keyed hash of an attempted username (HMAC-SHA256 keyed by SECRET_KEY, 96 bits): repeated
    attempts on one name show up as one value, and a name an operator knows can be looked up by
    computing its digest here. It changes when SECRET_KEY rotates."""
    return salted_hmac("common.security_log.username", username, algorithm="sha256").hexdigest()[:24]


def _who(user: Any) -> dict[str, Any]:
    if user is None or not getattr(user, "is_authenticated", False):
        return {"user_id": None, "username": ANONYMOUS}
    return {"user_id": user.pk, "username": user.get_username()}


def _where(request: Any) -> dict[str, Any]:
    if request is None:
        return {"http_method": None, "path": None, "client_ip": None}
    try:  # the address the lockouts and rate limits count (X-Forwarded-For behind trusted proxies)
        from common.ratelimit import client_ip
    except ImportError:  # pragma: no cover

        def client_ip(request: Any) -> str:
            return request.META.get("REMOTE_ADDR") or "unknown"

    return {
        "http_method": getattr(request, "method", None),
        "path": (getattr(request, "path", "") or "")[:_PATH_MAX] or None,
        "client_ip": client_ip(request) if hasattr(request, "META") else None,
    }


def security_event(
    event: str,
    *,
    outcome: str,
    reason: str,
    request: Any = None,
    user: Any = None,
    level: int = logging.WARNING,
    **fields: Any,
) -> None:
    """Log one security event. ``fields`` are extra facts: never a secret or personal data."""
    entry = {"event": event, "outcome": outcome, "reason": reason, **_who(user), **_where(request), **fields}
    logger.log(level, "%s: %s", event, reason, extra=entry)


def request_user(request: Any) -> Any:
    """The authenticated user of a Django or DRF request, without authenticating it again."""
    drf_user = getattr(request, "_user", None)  # DRF keeps the outcome of authentication here
    if drf_user is not None:
        return drf_user
    inner = getattr(request, "_request", request)
    return getattr(inner, "user", None)


def api_refusal(context: dict[str, Any], *, status: int, code: str, domain: bool) -> None:
    """Log an API error answer that refuses the caller (the API exception handler calls this).

    A domain refusal (403, 409, 422 from a service) on a view with ``denied_event`` logs that
    event; other domain refusals log ``request.denied``; 401, 403 and 404 otherwise log
    ``authz.denied``. Other statuses (400, 405, 429...) are not refusals of the caller's rights.
    """
    request, view = context.get("request"), context.get("view")
    denied_event = getattr(view, "denied_event", None)
    if domain and status in _REFUSAL_STATUSES and (status != 403 or denied_event):
        event = denied_event or "request.denied"
    elif status in (401, 403, 404):
        event = "authz.denied"
    else:
        return
    security_event(
        event, outcome="denied", reason=code, request=request, user=request_user(request), status=status,
        view=type(view).__name__ if view is not None else None,
    )  # fmt: skip


def refusal(request: Any, exc: Any, *, event: str = "request.denied", **fields: Any) -> None:
    """Log a service's refusal (a ``DomainError``) of a command that did not come through the API,
    such as an admin action, as ``api_refusal`` logs the API's: a 404 and a 403 without a named
    ``event`` are ``authz.denied``; 409 and 422 are ``event``; other statuses (400) are not
    refusals of the caller's rights and are not logged."""
    status = exc.status_code
    if status not in _REFUSAL_STATUSES and status != 404:
        return
    named = status in _REFUSAL_STATUSES and (status != 403 or event != "request.denied")
    security_event(
        event if named else "authz.denied", outcome="denied", reason=exc.code, request=request,
        user=request_user(request), status=status, **fields,
    )  # fmt: skip


def mfa_attempt(request: Any, user: Any, *, succeeded: bool, step: str) -> None:
    """A second-factor code offered at the admin's ``step`` (``verify`` or ``enrol``)."""
    security_event(
        "auth.mfa.succeeded" if succeeded else "auth.mfa.failed", outcome="success" if succeeded else "failure",
        reason=step if succeeded else "invalid_code", request=request, user=user,
        level=logging.INFO if succeeded else logging.WARNING, auth_method="totp", step=step,
    )  # fmt: skip


def login_failure_explained(request: Any, *, reason: str, user: Any = None, **fields: Any) -> None:
    """A sign-in method that knows why it refused (single sign-on: an unknown or deactivated
    account, an unverifiable answer) says so here, before Django's failure signal: that signal's
    event then carries this reason, ``user`` (the account, or ``None``) and ``fields`` instead of
    what a password attempt would be judged by."""
    request.security_login_failure = {"reason": reason, "user": user, "fields": fields}


def _on_logged_in(sender: Any, request: Any, user: Any, **_: Any) -> None:
    # A backend other than the password one says how the user signed in (``security_login``).
    how = getattr(user, "security_login", None) or {"reason": "password"}
    security_event(
        "auth.login.succeeded", outcome="success", request=request, user=user, level=logging.INFO,
        auth_method="session", **how,
    )  # fmt: skip


def _on_logged_out(sender: Any, request: Any, user: Any, **_: Any) -> None:
    security_event(
        "auth.logout", outcome="success", reason="logout", request=request, user=user, level=logging.INFO,
        auth_method="session",
    )  # fmt: skip


def _on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    explained = getattr(request, "security_login_failure", None)
    if explained is not None:
        security_event(
            "auth.login.failed", outcome="failure", reason=explained["reason"], request=request,
            user=explained["user"], **explained["fields"],
        )  # fmt: skip
        return
    User = get_user_model()
    attempted = credentials.get(User.USERNAME_FIELD, credentials.get("username"))
    account = None
    if isinstance(attempted, str) and attempted:
        account = User._default_manager.filter(**{User.USERNAME_FIELD: attempted}).first()
    fields: dict[str, Any] = {"auth_method": "session"}
    if getattr(request, "axes_locked_out", False):
        reason = "locked_out"
    elif account is None:
        reason = "unknown_user"
    elif not account.is_active:
        reason = "inactive_account"
    else:
        reason = "invalid_credentials"
    if account is None:
        fields["attempted_username_hmac"] = username_digest(attempted) if isinstance(attempted, str) else None
    security_event("auth.login.failed", outcome="failure", reason=reason, request=request, user=account, **fields)


def connect_signals() -> None:
    """Session logins go through Django's auth signals; called once from an AppConfig.ready()."""
    user_logged_in.connect(_on_logged_in, dispatch_uid="common.security_log.logged_in")
    user_logged_out.connect(_on_logged_out, dispatch_uid="common.security_log.logged_out")
    user_login_failed.connect(_on_login_failed, dispatch_uid="common.security_log.login_failed")
