"""Request limits of the API: per-user rate limits on chosen views, and the failed-token lockout.

Both count in fixed windows in the ``counters`` cache (a SQLite file on the embedded default,
Redis at scale). A window is ``period`` seconds long and starts at a multiple of ``period`` since
the epoch; its counter's key names the group, the period, a hash of what is counted (a user, an
address, a token sent) and the window's start, so a new window is a new counter. A refused
request answers 429 in the API's JSON error shape with a ``Retry-After`` header (common/api.py)
saying when its window ends.

What one API request costs the counter store is on the hot path of every decision: a rate-limited
request counts itself in one statement (``SQLiteCounterCache.hit``; ``add`` then ``incr`` on other
caches), and the lockout check reads the address's and the sent token's counters in one ``get_many``.
Only a failed authentication writes lockout counters.

The counters are a brake, not a gate: when the counter store itself fails (Redis down), requests
pass and the failure is logged, so an outage of the cache never stops the approval API.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
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


_PERIOD_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _split_rate(rate: str) -> tuple[int, int]:
    """``"120/m"`` -> ``(120, 60)``; ``"10/30s"`` -> ``(10, 30)`` (the settings check the form)."""
    count, per = rate.split("/")
    return int(count), int(per[:-1] or 1) * _PERIOD_S[per[-1]]


def _window(group: str, value: str, period_s: int, now: float) -> tuple[str, float]:
    """The key of the counter of ``value`` in ``group`` for the window holding ``now``, and when
    that window ends."""
    start = int(now) // period_s * period_s
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]  # any address or prefix makes a valid key
    return f"rl:{group}:{period_s}:{digest}:{start}", start + period_s


def _count(group: str, value: str, period_s: int) -> tuple[int, float] | None:
    """Count one more for ``value`` in ``group``'s current window: the count so far and the seconds
    until the window ends, or ``None`` (logged) when the counter store fails."""
    now = time.time()
    key, ends = _window(group, value, period_s, now)
    timeout = ends - now + 1
    try:
        cache = caches["counters"]
        hit = getattr(cache, "hit", None)
        if hit is not None:
            count = hit(key, timeout)
        elif cache.add(key, 1, timeout):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # it expired between the two
                cache.add(key, 1, timeout)
                count = 1
    except Exception:
        logger.exception("request counter unavailable; not limiting", extra={"group": group})
        return None
    return count, ends - now


def _counts(group_values: list[tuple[str, str]], period_s: int) -> list[tuple[int, float]] | None:
    """The current windows' counts of several ``(group, value)`` pairs, without counting (one
    read), or ``None`` (logged) when the counter store fails."""
    now = time.time()
    windows = [_window(group, value, period_s, now) for group, value in group_values]
    try:
        found = caches["counters"].get_many([key for key, _ in windows])
    except Exception:
        logger.exception("request counter unavailable; not limiting", extra={"group": group_values[0][0]})
        return None
    return [(int(found.get(key, 0)), ends - now) for key, ends in windows]


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
        if not settings.API_RATE_LIMITS_ENABLED:
            return True
        rate = settings.API_RATE_LIMITS[group]
        limit, period_s = _split_rate(rate)
        user = getattr(request, "user", None)
        who = f"user:{user.pk}" if user is not None and user.is_authenticated else None
        counted = _count(f"api.{group}", who or f"ip:{client_ip(request) or 'unknown'}", period_s)
        if counted is None or counted[0] <= limit:
            return True
        self.retry_after_s = max(1, int(counted[1]))
        logger.warning("api rate limit reached", extra={"group": group, "rate": rate, "path": request.path})
        return False

    def wait(self) -> float:
        return float(self.retry_after_s)


class LockedOut(exceptions.Throttled):
    """Too many failed authentications from this client (or with this very token): 429 until the window ends."""

    default_detail = "too many failed token authentications; try again later"
    default_code = "locked_out"

    def __init__(self, wait: int) -> None:
        super().__init__(
            wait=wait, detail=f"too many failed token authentications from this client or for this token; "
            f"retry in {wait} s"
        )  # fmt: skip


def _token_lockout_keys(request: Any, token: str) -> list[tuple[str, str]]:
    # Per address and per whole token guessed, never per prefix: the prefix is public (the ledger
    # names tokens by it), so a lock on it would let anyone hold a token's owner off.
    keys = [("auth.token.ip", client_ip(request) or "unknown")]
    if token:
        keys.append(("auth.token.guess", token))
    return keys


def token_lockout_check(request: Any, *, token: str) -> None:
    """Raise ``LockedOut`` when this client address, or this very token (the whole of it, as sent),
    has reached the limit of failed token authentications in the current window: then even the
    right token is refused from that address. A token's holder is never locked out by others'
    guesses from other addresses: they cannot send the holder's whole token without knowing it."""
    counts = _counts(_token_lockout_keys(request, token), settings.API_TOKEN_LOCKOUT_WINDOW_S)
    for count, left_s in counts or []:
        if count >= settings.API_TOKEN_LOCKOUT_FAILURES:
            raise LockedOut(wait=max(1, int(left_s)))


def token_failure_record(request: Any, *, token: str, prefix: str) -> None:
    """Count one failed token authentication for the client address and for the whole token sent
    (its counter's key holds a hash of it, never the token); the failure that reaches the limit is
    logged as a lockout, naming the token by its public prefix only."""
    for group, value in _token_lockout_keys(request, token):
        counted = _count(group, value, settings.API_TOKEN_LOCKOUT_WINDOW_S)
        if counted is not None and counted[0] == settings.API_TOKEN_LOCKOUT_FAILURES:
            logger.warning(
                "api token authentication locked out",
                extra={
                    "lockout": group.rsplit(".", 1)[1],
                    "client_ip": client_ip(request),
                    "token_prefix": prefix or None,
                    "seconds": int(counted[1]),
                },
            )
