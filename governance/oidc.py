"""Single sign-on to the admin with OpenID Connect (mozilla-django-oidc), onto the accounts that exist.

The identity provider proves who the person is; this service still decides who they are here.
A sign-in names an existing account by one claim (``OIDC_USERNAME_CLAIM``):

- ``preferred_username`` (the default) names the account whose username is exactly that value.
  Enterprise providers fill it with the login name (Keycloak's username, Entra ID's UPN, Okta's
  login); OpenID Connect does not promise it is unique or stable, so the provider must keep it
  so (usernames users cannot edit).
- ``email`` names the one account with that e-mail address (case-insensitive), and only when the
  provider says it verified the address (``email_verified``): an address a user typed into their
  provider profile names nobody. Two accounts with the address refuse the sign-in.

Sign-in never creates an account and never changes one: accounts are opened by a platform admin,
and roles are granted through the services, which write them to the ledger; a provider that could
create users would grant itself that power. It refuses deactivated accounts, service accounts
(they use API tokens) and accounts that are not staff (this sign-in opens the admin, as the
password form does). Each refusal tells the person why on the admin's login page and is a
security event (``auth.login.failed``, ``auth_method`` oidc); a success is
``auth.login.succeeded`` with reason ``oidc``.

The ID token is checked beyond what mozilla-django-oidc does: RS256 only, its signature against
the provider's JWKS, ``iss`` equal to ``OIDC_OP_ISSUER``, ``aud`` holding our client id (and
``azp`` when present), ``exp``, ``iat`` and the nonce; the userinfo answer must name the same
``sub``. The code flow uses PKCE.

Second factor: a staff user who signs in this way must still pass the admin's TOTP step
(governance/mfa.py), unless the ID token says the provider itself used a second factor: an ``amr``
value among ``OIDC_MFA_AMR_VALUES`` (mfa, otp, hwk) or an ``acr`` among ``OIDC_MFA_ACR_VALUES``.
Then the session records that assertion (``IDP_MFA_SESSION_KEY``) and
``IdentityProviderMfaMiddleware`` counts it as verified; see governance/mfa.py for why a session
flag rather than an OTP device. Only the signed ID token's claims count: ``amr`` in a userinfo
answer is ignored.

The provider's endpoints come from its discovery document (``OIDC_OP_ISSUER`` +
``/.well-known/openid-configuration``), fetched at the first sign-in, not at start-up, and kept
for an hour; endpoints set in the settings take precedence. Signing out of the admin ends the
session here only, not at the provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from common.security_log import login_failure_explained, security_event, username_digest
from governance.mfa import IDP_MFA_SESSION_KEY
from governance.models import ServiceAccount

logger = logging.getLogger(__name__)

DISCOVERY_TTL_S = 3600
# Clock difference tolerated between the provider and this service when checking exp and iat.
CLOCK_SKEW_S = 60


class SignInRefused(Exception):
    """A single sign-on that ends without a session: ``code`` is the security log's reason,
    ``message`` what the person reads on the login page."""

    def __init__(self, code: str, message: str, *, user: AbstractBaseUser | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.user = user
        self.fields = fields


def provider_name() -> str:
    return str(settings.OIDC_PROVIDER_NAME)


# --- The provider's endpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderEndpoints:
    authorization: str
    token: str
    userinfo: str
    jwks: str


_discovered: dict[str, tuple[float, dict[str, Any]]] = {}
_discovery_lock = threading.Lock()


def _discovery_document(issuer: str) -> dict[str, Any]:
    """The provider's metadata (OpenID Connect Discovery 1.0), cached per issuer; its ``issuer``
    must be the configured one (section 4.3), or a look-alike document could redirect sign-ins."""
    with _discovery_lock:
        cached = _discovered.get(issuer)
        if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL_S:
            return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    unavailable = SignInRefused(
        "provider_error", f"{provider_name()} could not be reached, so you are not signed in. Try again later."
    )
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        logger.warning("OIDC discovery at %s failed: %s", url, exc)
        raise unavailable from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        found = document.get("issuer") if isinstance(document, dict) else None
        logger.warning("OIDC discovery at %s names issuer %r, not the configured %r", url, found, issuer)
        raise _misconfigured()
    with _discovery_lock:
        _discovered[issuer] = (time.monotonic(), document)
    return document


def _misconfigured() -> SignInRefused:
    return SignInRefused(
        "provider_error",
        f"{provider_name()} does not answer as this service was told it would, so you are not signed in; "
        "tell a platform admin.",
    )


def provider_endpoints() -> ProviderEndpoints:
    """The four endpoints: each from the settings when set there, otherwise from discovery."""
    configured = {
        "authorization": settings.OIDC_OP_AUTHORIZATION_ENDPOINT,
        "token": settings.OIDC_OP_TOKEN_ENDPOINT,
        "userinfo": settings.OIDC_OP_USER_ENDPOINT,
        "jwks": settings.OIDC_OP_JWKS_ENDPOINT,
    }
    if not all(configured.values()):
        document = _discovery_document(settings.OIDC_OP_ISSUER)
        for key in configured:
            if not configured[key]:
                # Discovery 1.0 names them authorization_endpoint, token_endpoint, userinfo_endpoint, jwks_uri.
                configured[key] = document.get("jwks_uri" if key == "jwks" else f"{key}_endpoint") or ""
        if not all(isinstance(value, str) and value for value in configured.values()):
            logger.warning("OIDC discovery of %s lacks an endpoint: %r", settings.OIDC_OP_ISSUER, configured)
            raise _misconfigured()
    return ProviderEndpoints(**configured)


# --- Claims to an account -------------------------------------------------------------------------


def idp_asserted_mfa(id_token: Mapping[str, Any]) -> str | None:
    """What in the ID token says the provider used a second factor (``amr:otp``, ``acr:...``),
    or ``None``. RFC 8176 makes ``amr`` a list of strings; a lone string is read as one."""
    amr = id_token.get("amr")
    values = [amr] if isinstance(amr, str) else amr if isinstance(amr, list) else []
    for value in values:
        if isinstance(value, str) and value in settings.OIDC_MFA_AMR_VALUES:
            return f"amr:{value}"
    acr = id_token.get("acr")
    if isinstance(acr, str) and acr in settings.OIDC_MFA_ACR_VALUES:
        return f"acr:{acr}"
    return None


def user_for_claims(claims: Mapping[str, Any]) -> AbstractBaseUser:
    """The existing account the provider's claims name, or ``SignInRefused`` saying why none may
    sign in. Reads only; never creates or changes an account."""
    User = get_user_model()
    claim = settings.OIDC_USERNAME_CLAIM
    value = claims.get(claim)
    name = provider_name()
    if not isinstance(value, str) or not value.strip():
        raise SignInRefused(
            "claim_missing",
            f"{name} did not say which account you are (no {claim!r} claim); tell a platform admin.",
            claim=claim,
        )
    if claim == "email":
        if claims.get("email_verified") is not True:
            raise SignInRefused(
                "email_not_verified",
                f"{name} has not verified the e-mail address {value}, so it cannot name an account here.",
                attempted_username_hmac=username_digest(value),
            )
        matches = list(User._default_manager.filter(email__iexact=value)[:2])
    else:
        matches = list(User._default_manager.filter(**{User.USERNAME_FIELD: value})[:2])
    if not matches:
        raise SignInRefused(
            "unknown_user",
            f"No account here matches {value} from {name}, and signing in does not create one: "
            "ask a platform admin to open your account.",
            attempted_username_hmac=username_digest(value),
        )
    if len(matches) > 1:
        raise SignInRefused(
            "ambiguous_account",
            f"Several accounts here have the e-mail address {value}; ask a platform admin to make it unique.",
            attempted_username_hmac=username_digest(value),
        )
    user = matches[0]
    username = user.get_username()
    if not user.is_active:
        raise SignInRefused(
            "inactive_account", f"The account {username} is deactivated; ask a platform admin.", user=user
        )
    if ServiceAccount.objects.filter(user=user).exists():
        raise SignInRefused(
            "service_account", f"{username} is a service account: it uses API tokens and cannot sign in.", user=user
        )
    if not user.is_staff:
        raise SignInRefused(
            "not_staff", f"{username} is not a staff account: only staff sign in to the admin.", user=user
        )
    return user


# --- The backend ----------------------------------------------------------------------------------


def _unverifiable() -> SignInRefused:
    return SignInRefused(
        "invalid_id_token",
        f"The answer from {provider_name()} could not be verified, so you are not signed in. "
        "Try again; if it happens again, tell a platform admin.",
    )


class OIDCBackend(OIDCAuthenticationBackend):
    """Authenticates the callback of the authorization code flow onto an existing account.

    Its ``authenticate`` takes the callback's keyword arguments only, so Django never offers it a
    username and password (and the password backends never see the callback): a password sign-in
    cannot reach the provider with a code planted in its query string.
    """

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, *, nonce: str | None, code_verifier: str | None
    ) -> AbstractBaseUser | None:
        if request is None:
            return None
        try:
            endpoints = provider_endpoints()
            self.OIDC_OP_TOKEN_ENDPOINT = endpoints.token
            self.OIDC_OP_USER_ENDPOINT = endpoints.userinfo
            self.OIDC_OP_JWKS_ENDPOINT = endpoints.jwks
            user = super().authenticate(request, nonce=nonce, code_verifier=code_verifier)
            if user is None:
                raise _unverifiable()
            return user
        except SignInRefused as refused:
            refusal = refused
        except (SuspiciousOperation, jwt.PyJWTError) as exc:
            logger.warning("OIDC sign-in refused: %s", exc)
            refusal = _unverifiable()
        except (requests.RequestException, KeyError, ValueError, TypeError) as exc:
            logger.warning("OIDC sign-in failed talking to the provider: %s", exc)
            refusal = SignInRefused(
                "provider_error",
                f"{provider_name()} could not be reached or answered with an error, so you are not signed in. "
                "Try again later.",
            )
        request.oidc_refusal = refusal  # type: ignore[attr-defined]  # the callback view shows it
        login_failure_explained(
            request, reason=refusal.code, user=refusal.user, auth_method="oidc", **refusal.fields
        )  # fmt: skip
        return None

    def get_payload_data(self, token: bytes | str, key: Any) -> dict[str, Any]:
        """The ID token's claims once its signature, algorithm, issuer and audience hold.

        mozilla-django-oidc checks the signature only (not ``aud``, nor ``iss``); OpenID Connect
        Core 3.1.3.7 asks for all of them, so this decodes the token itself.
        """
        algorithm = self.OIDC_RP_SIGN_ALGO
        if jwt.get_unverified_header(token).get("alg") != algorithm:
            raise SuspiciousOperation(f"the ID token is not signed with {algorithm}")
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm], audience=self.OIDC_RP_CLIENT_ID, issuer=settings.OIDC_OP_ISSUER,
            leeway=CLOCK_SKEW_S, options={"require": ["iss", "aud", "sub"]},
        )  # fmt: skip
        audiences = payload["aud"] if isinstance(payload["aud"], list) else [payload["aud"]]
        azp = payload.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("the ID token was issued to another party (azp)")
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> AbstractBaseUser:
        """Map the claims to an existing account (never creates one: the name is mozilla's)."""
        for required in ("exp", "iat"):
            if required not in payload:
                raise SuspiciousOperation(f"the ID token has no {required}")
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload["sub"]:
            # OpenID Connect Core 5.3.2: the userinfo answer must be about the ID token's subject.
            raise SuspiciousOperation("the userinfo answer names another subject")
        # The signed ID token wins where both speak; amr and acr are read from it alone.
        user = user_for_claims({**userinfo, **payload})
        mfa = idp_asserted_mfa(payload)
        user.oidc_idp_mfa = mfa  # type: ignore[attr-defined]
        # What common.security_log writes for this sign-in (user_logged_in).
        user.security_login = {"reason": "oidc", "idp_mfa": mfa}  # type: ignore[attr-defined]
        return user

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return True  # user_for_claims decides, with a reason for each refusal

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:
        # As the password backend: a session of a deactivated account ends at its next request
        # (mozilla-django-oidc's get_user would keep it).
        return ModelBackend.get_user(self, user_id)


# --- The views ------------------------------------------------------------------------------------


def _admin_login_url() -> str:
    return reverse("admin:login")


class AuthenticationRequestView(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/``: sends the browser to the provider's authorization endpoint."""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_endpoints().authorization
        except SignInRefused as refusal:
            messages.error(request, refusal.message)
            return HttpResponseRedirect(_admin_login_url())
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: the provider's answer. A refusal goes back to the admin's login page
    with its reason; a success to where the sign-in started, through the TOTP step unless the
    provider asserted a second factor."""

    @property
    def failure_url(self) -> str:
        return _admin_login_url()

    @property
    def success_url(self) -> str:
        # mozilla-django-oidc checked "next" when the sign-in started.
        return self.request.session.get("oidc_login_next") or reverse("admin:index")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)
        except SuspiciousOperation:
            # The state in the answer is not one this browser's session started.
            security_event(
                "auth.login.failed", outcome="failure", reason="state_mismatch", request=request, auth_method="oidc"
            )
            messages.error(request, "This sign-in did not start in this browser, or it took too long. Start again.")
            return HttpResponseRedirect(self.failure_url)

    def login_failure(self) -> HttpResponse:
        request = self.request
        refusal: SignInRefused | None = getattr(request, "oidc_refusal", None)
        if refusal is not None:
            message = refusal.message
        else:
            error = request.GET.get("error")
            reason = "provider_refused" if error else "state_mismatch"
            if error:
                message = f"Sign-in with {provider_name()} did not finish ({error[:60]}). You are not signed in."
            else:
                message = "This sign-in did not start in this browser, or it took too long. Start again."
            security_event(
                "auth.login.failed", outcome="failure", reason=reason, request=request, auth_method="oidc",
                provider_error=error[:60] if error else None,
            )  # fmt: skip
        messages.error(request, message)
        return super().login_failure()

    def login_success(self) -> HttpResponse:
        response = super().login_success()  # auth.login: the session now belongs to this user
        asserted = getattr(self.user, "oidc_idp_mfa", None)
        if asserted:
            self.request.session[IDP_MFA_SESSION_KEY] = {
                "user": str(self.user.pk),
                "by": asserted,
                "at": timezone.now().isoformat(),
            }
        return response
