"""GET /healthz: is the service ready? Database, broker and ledger signing key, as JSON.

Answers 200 when every check passes and 503 otherwise, with one line per failing check. No
authentication: it reveals readiness, never configuration values or secrets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger("config.health")


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_broker() -> str:
    from config.celery import app

    with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
        _ = conn.default_channel  # opens the channel: a transport that connects lazily connects here
        return conn.transport_cls if isinstance(conn.transport_cls, str) else conn.transport.driver_type


def _check_signing_key() -> str:
    from audits.ledger.keys import load_signer_keys

    keys = load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)
    return f"{len(keys)} key(s): " + ", ".join(f"{k.name}+{k.key_id.hex()}" for k in keys)


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "broker": _check_broker,
    "signing_key": _check_signing_key,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail = check()
            ok = True
        except Exception as exc:  # a health check reports every failure, whatever its type
            # The reason goes to the log; the unauthenticated answer names only the kind of fault.
            logger.error("health check %s failed: %s", name, exc)
            detail = f"{type(exc).__name__} (see the service log)"
            ok = False
        results[name] = {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}
    healthy = all(r["ok"] for r in results.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": results}, status=200 if healthy else 503
    )
