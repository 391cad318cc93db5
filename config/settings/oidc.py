"""Single sign-on settings (OpenID Connect, governance/oidc.py), read into base.py.

Off unless ``OIDC_RP_CLIENT_ID`` is set. Then the admin's login page offers "Sign in with
``OIDC_PROVIDER_NAME``": existing staff accounts only, never created; the TOTP step follows unless
the ID token asserts a second factor. mozilla-django-oidc reads these names from the settings.
docs/configuration.md lists the variables; production.py also requires https:// URLs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from config.env import SettingError, env_int, env_list, env_optional_str, env_secret, env_str

OIDC_RP_CLIENT_ID = env_optional_str("OIDC_RP_CLIENT_ID") or ""
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_RP_CLIENT_SECRET") or ""
# The provider's issuer: the ID token's "iss" must equal it, and its discovery document
# (ISSUER/.well-known/openid-configuration, fetched at the first sign-in, kept an hour) gives
# each endpoint not set here.
OIDC_OP_ISSUER = env_optional_str("OIDC_OP_ISSUER") or ""
OIDC_OP_AUTHORIZATION_ENDPOINT = env_optional_str("OIDC_OP_AUTHORIZATION_ENDPOINT") or ""
OIDC_OP_TOKEN_ENDPOINT = env_optional_str("OIDC_OP_TOKEN_ENDPOINT") or ""
OIDC_OP_USER_ENDPOINT = env_optional_str("OIDC_OP_USER_ENDPOINT") or ""
OIDC_OP_JWKS_ENDPOINT = env_optional_str("OIDC_OP_JWKS_ENDPOINT") or ""
OIDC_PROVIDER_URLS = {
    "OIDC_OP_ISSUER": OIDC_OP_ISSUER,
    "OIDC_OP_AUTHORIZATION_ENDPOINT": OIDC_OP_AUTHORIZATION_ENDPOINT,
    "OIDC_OP_TOKEN_ENDPOINT": OIDC_OP_TOKEN_ENDPOINT,
    "OIDC_OP_USER_ENDPOINT": OIDC_OP_USER_ENDPOINT,
    "OIDC_OP_JWKS_ENDPOINT": OIDC_OP_JWKS_ENDPOINT,
}
if OIDC_ENABLED:
    if not OIDC_RP_CLIENT_SECRET:
        raise SettingError("OIDC_RP_CLIENT_SECRET", "is required when OIDC_RP_CLIENT_ID is set (or its _FILE)")
    if not OIDC_OP_ISSUER:
        raise SettingError("OIDC_OP_ISSUER", "is required when OIDC_RP_CLIENT_ID is set: the provider's issuer URL")
    for _name, _url in OIDC_PROVIDER_URLS.items():
        _parts = urlsplit(_url)
        if _url and (_parts.scheme not in ("http", "https") or not _parts.hostname):
            raise SettingError(_name, f"expected an http:// or https:// URL, got {_url!r}")
# The button's label: "Sign in with <this>".
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", urlsplit(OIDC_OP_ISSUER).hostname or "single sign-on")
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid profile email")
if "openid" not in OIDC_RP_SCOPES.split():
    raise SettingError("OIDC_RP_SCOPES", f"must include openid, got {OIDC_RP_SCOPES!r}")
# The claim that names the account: preferred_username (its username, exactly) or email (its
# e-mail address, only when the provider verified it). docs/security.md weighs the two.
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
if OIDC_USERNAME_CLAIM not in ("preferred_username", "email"):
    raise SettingError("OIDC_USERNAME_CLAIM", f"expected preferred_username or email, got {OIDC_USERNAME_CLAIM!r}")
# ID token values that mean the provider itself used a second factor (RFC 8176 amr; acr values
# are the provider's own names, none by default).
OIDC_MFA_AMR_VALUES = env_list("OIDC_MFA_AMR_VALUES", ["mfa", "otp", "hwk"])
OIDC_MFA_ACR_VALUES = env_list("OIDC_MFA_ACR_VALUES", [])
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_S", 10, minimum=1)
OIDC_VERIFY_SSL = True  # a private CA: REQUESTS_CA_BUNDLE=/path/to/bundle.pem
OIDC_RP_SIGN_ALGO = "RS256"  # verified against the provider's JWKS
OIDC_USE_PKCE = True
OIDC_CREATE_USER = False
OIDC_AUTHENTICATE_CLASS = "governance.oidc.AuthenticationRequestView"
OIDC_CALLBACK_CLASS = "governance.oidc.CallbackView"

# What base.py's star import takes: the settings, not this module's helpers.
__all__ = [name for name in dir() if name.startswith("OIDC_")]
