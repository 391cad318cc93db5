"""The id of the request or task being served, carried by log lines and ledger entries.

A request id arrives in the ``X-Request-ID`` header (when well formed) or is generated; Celery
tasks inherit the id of the request that dispatched them (config/celery.py).
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def get_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> Token[str | None]:
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """Keep a caller's id when it is well formed (no log injection); otherwise make one."""
    if candidate and _WELL_FORMED.match(candidate):
        return candidate
    return new_request_id()
