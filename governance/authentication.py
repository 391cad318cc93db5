"""API authentication by token: ``Authorization: Token gov_<prefix>_<secret>`` (or ``Bearer``)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from governance.services import api_token_authenticate


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("token", "bearer")

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("malformed Authorization header: expected 'Token <token>'")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token holds characters a token never has") from None
        row = api_token_authenticate(raw)
        if row is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token")
        return row.user, row

    def authenticate_header(self, request: Request) -> str:
        return "Token"
