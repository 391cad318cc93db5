"""API authentication: by token (``Authorization: Token gov_<prefix>_<secret>``, or ``Bearer``), or
by an admin session that has passed the second factor.

Failed token authentications are counted per client address and per whole token sent
(``API_TOKEN_LOCKOUT_FAILURES`` in ``API_TOKEN_LOCKOUT_WINDOW_S``); once either reaches the limit,
every token request from that address, or with that very token, answers 429 ``locked_out`` until
the window ends, the right token included from a locked address (common/ratelimit.py). Never per
prefix: the prefix is public (the ledger names tokens by it), and a lock on it would let anyone who
read it hold the token's owner off.
"""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from common.ratelimit import token_failure_record, token_lockout_check
from common.security_log import security_event
from governance.services import api_token_authenticate


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("token", "bearer")

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            _token_login_failed(request, "malformed_header")
            raise exceptions.AuthenticationFailed("malformed Authorization header: expected 'Token <token>'")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            _token_login_failed(request, "undecodable_token")
            raise exceptions.AuthenticationFailed("the token holds characters a token never has") from None
        prefix = _token_prefix(raw)
        token_lockout_check(request, token=raw)
        row = api_token_authenticate(raw)
        if row is None:
            token_failure_record(request, token=raw, prefix=prefix)
            _token_login_failed(request, "invalid_token")
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token")
        # The token is named by its row id: no part of the token itself is ever logged.
        security_event(
            "auth.login.succeeded", outcome="success", reason="token", request=request, user=row.user,
            level=logging.INFO, auth_method="token", token_id=row.pk,
        )  # fmt: skip
        return row.user, row

    def authenticate_header(self, request: Request) -> str:
        return "Token"


def _token_login_failed(request: Request, reason: str) -> None:
    security_event("auth.login.failed", outcome="failure", reason=reason, request=request, auth_method="token")


def _token_prefix(raw: str) -> str:
    """The public part of a well-formed token (``gov_<prefix>_<secret>``), else ``""``."""
    parts = raw.split("_", 2)
    if len(parts) == 3 and parts[1].isalnum() and len(parts[1]) <= 32:
        return parts[1]
    return ""


class VerifiedSessionAuthentication(authentication.SessionAuthentication):
    """A session counts only once it has passed the second factor.

    Every session is opened by the admin login, so a session that has seen only the password
    (``user.is_verified()`` false: OTPMiddleware) must not reach the API, or the API would be a way
    around the admin's MFA. Token authentication is not concerned: a token is its own credential.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        is_verified = getattr(result[0], "is_verified", None)
        if is_verified is None or not is_verified():
            raise exceptions.AuthenticationFailed(
                "this session has not passed the second factor: finish the admin sign-in first"
            )
        return result


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "governance.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token gov_<prefix>_<secret>` or `Bearer gov_<prefix>_<secret>`",
        }


class VerifiedSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "governance.authentication.VerifiedSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "an admin session that has passed the second factor (TOTP)",
        }
