"""The one exception type for domain errors: a stable code, a clear message, an HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the service refuses for a reason the caller can act on.

    ``code`` is stable (clients may branch on it); ``message`` names what is wrong; ``fields``
    maps input field names to their problems when the input is at fault.
    """

    status_code = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status_code: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or {}
        if status_code is not None:
            self.status_code = status_code


class NotFound(DomainError):
    status_code = 404


class PermissionDenied(DomainError):
    status_code = 403


class Conflict(DomainError):
    status_code = 409
