"""Request limits of the API: per-user rate limits on chosen views, and the failed-token lockout.

Both count in the ``counters`` cache through django-ratelimit's fixed windows (settings:
``RATELIMIT_USE_CACHE``; a SQLite file on the embedded default, Redis at scale). A refused request
answers 429 in the API's JSON error shape with a ``Retry-After`` header (common/api.py).

The counters are a brake, not a gate: when the counter store itself fails (Redis down), requests
pass and the failure is logged, so an outage of the cache never stops the approval API.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger("common.ratelimit")


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind ``TRUSTED_PROXY_COUNT`` proxies the entry
    they appended to ``X-Forwarded-For`` (entries left of it are whatever the client sent).
    ``None`` when there is none or it is not an IP address (django-axes stores it in an address
    column, which PostgreSQL checks)."""
    import ipaddress

    address = request.META.get("REMOTE_ADDR")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def _usage(request: Any, *, group: str, value: str, rate: str, increment: bool) -> dict[str, Any] | None:
    try:
        return get_usage(request, group=group, key=lambda _group, _request: value, rate=rate, increment=increment)
    except Exception:
        logger.exception("request counter unavailable; not limiting", extra={"group": group})
        return None


class ApiRateLimit(BaseThrottle):
    """DRF throttle for views that name their limit: ``rate_limit_groups = {"POST": "approvals.decide"}``.

    The rate of a group comes from ``settings.API_RATE_LIMITS`` (``"60/m"``); the key is the
    authenticated user (every limited view requires one), else the client address."""

    def __init__(self) -> None:
        self.retry_after_s = 1

    def allow_request(self, request: Any, view: Any) -> bool:
        group = getattr(view, "rate_limit_groups", {}).get(request.method)
        if group is None:
            return True
        rate = settings.API_RATE_LIMITS[group]
        user = getattr(request, "user", None)
        who = f"user:{user.pk}" if user is not None and user.is_authenticated else None
        value = who or f"ip:{client_ip(request) or 'unknown'}"
        usage = _usage(request, group=f"api.{group}", value=value, rate=rate, increment=True)
        if usage is None or not usage["should_limit"]:
            return True
        self.retry_after_s = max(1, int(usage["time_left"]))
        logger.warning("api rate limit reached", extra={"group": group, "rate": rate, "path": request.path})
        return False

    def wait(self) -> float:
        return float(self.retry_after_s)


class LockedOut(exceptions.Throttled):
    """Too many failed authentications from this client (or for this token): 429 until the window ends."""

    default_detail = "too many failed token authentications; try again later"
    default_code = "locked_out"

    def __init__(self, wait: int) -> None:
        super().__init__(
            wait=wait, detail=f"too many failed token authentications from this client or for this token; "
            f"retry in {wait} s"
        )  # fmt: skip


def _token_lockout_keys(request: Any, prefix: str) -> list[tuple[str, str]]:
    keys = [("auth.token.ip", client_ip(request) or "unknown")]
    if prefix:
        keys.append(("auth.token.prefix", prefix))
    return keys


def _token_lockout_rate() -> str:
    return f"{settings.API_TOKEN_LOCKOUT_FAILURES}/{settings.API_TOKEN_LOCKOUT_WINDOW_S}s"


def token_lockout_check(request: Any, *, prefix: str) -> None:
    """Raise ``LockedOut`` when this client address, or this token prefix, has reached the limit of
    failed token authentications in the current window: then even the right token is refused."""
    for group, value in _token_lockout_keys(request, prefix):
        usage = _usage(request, group=group, value=value, rate=_token_lockout_rate(), increment=False)
        if usage is not None and usage["count"] >= settings.API_TOKEN_LOCKOUT_FAILURES:
            raise LockedOut(wait=max(1, int(usage["time_left"])))


def token_failure_record(request: Any, *, prefix: str) -> None:
    """Count one failed token authentication for the client address and the token prefix; the
    failure that reaches the limit is logged as a lockout (the prefix is the token's public part)."""
    for group, value in _token_lockout_keys(request, prefix):
        usage = _usage(request, group=group, value=value, rate=_token_lockout_rate(), increment=True)
        if usage is not None and usage["count"] == settings.API_TOKEN_LOCKOUT_FAILURES:
            logger.warning(
                "api token authentication locked out",
                extra={
                    "lockout": group.rsplit(".", 1)[1],
                    "client_ip": client_ip(request),
                    "token_prefix": prefix or None,
                    "seconds": int(usage["time_left"]),
                },
            )
