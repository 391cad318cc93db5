"""The claims the test provider asserts: the user's name and verified e-mail address, and the
``amr`` (and ``acr``) the test configured for that user, in the ID token and the userinfo answer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "amr": "openid", "acr": "openid"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        entry = settings.PROVIDER_USERS.get(user.get_username(), {})
        claims: dict[str, Any] = {
            "preferred_username": user.get_username(),
            "email": user.email,
            "email_verified": True,
            "amr": entry.get("amr", ["pwd"]),
        }
        if "acr" in entry:
            claims["acr"] = entry["acr"]
        claims.update(entry.get("claims", {}))
        return claims
