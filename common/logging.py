"""Structured logs: one JSON object per line, with UTC time and the request id."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest

from common.request_context import get_request_id

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "request_id"}
)


# A query string in a request line ("GET /path?token=... HTTP/1.1"): it may hold a secret.
_QUERY_STRING = re.compile(r"\?[^\s\"]*")


def _loggable(value: Any) -> Any:
    """Django passes the request itself as ``extra={"request": ...}`` (django.request,
    django.security.*); its repr holds the full URL, query string included. Log method and path."""
    inner = getattr(value, "_request", value)  # a DRF Request wraps Django's
    if isinstance(inner, HttpRequest):
        return f"{inner.method} {inner.path}"
    return value


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = get_request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "django.server":  # runserver's access lines: the request line as sent
            message = _QUERY_STRING.sub("?[query removed]", message)
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "request_id": getattr(record, "request_id", None) or get_request_id() or "-",
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _loggable(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
