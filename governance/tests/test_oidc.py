"""Single sign-on, below the browser: which account a provider's claims name (existing ones only,
never created), what counts as the provider asserting a second factor, the ID token checks beyond
mozilla-django-oidc's, the session flag that stands for that assertion, and django-axes left to
passwords. The whole sign-in against a real provider: tests/test_oidc_sign_in.py."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.test import Client, override_settings

from common.security_log import username_digest
from governance.mfa import IDP_MFA_SESSION_KEY, axes_counts_passwords_only
from governance.oidc import OIDCBackend, SignInRefused, idp_asserted_mfa, user_for_claims
from governance.services import service_account_create

pytestmark = pytest.mark.django_db
User = get_user_model()
ISSUER = "https://sso.example.org/realms/staff"
CLIENT_ID = "llmops-governance"


def _refusal(claims: dict[str, Any]) -> SignInRefused:
    users_before = User.objects.count()
    with pytest.raises(SignInRefused) as refused:
        user_for_claims(claims)
    assert User.objects.count() == users_before  # a refusal never leaves an account behind
    return refused.value


# --- Claims to an account ------------------------------------------------------------------------


def test_preferred_username_names_the_account_with_exactly_that_username(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    assert user_for_claims({"sub": "1", "preferred_username": officer.username}) == officer

    unknown = _refusal({"sub": "1", "preferred_username": officer.username.upper()})
    assert unknown.code == "unknown_user" and unknown.user is None
    assert f"No account here matches {officer.username.upper()}" in unknown.message
    assert "does not create one" in unknown.message
    # The log names an unknown name by its keyed hash, as a failed password sign-in does.
    assert unknown.fields == {"attempted_username_hmac": username_digest(officer.username.upper())}
    assert not User.objects.filter(username=officer.username.upper()).exists()


def test_a_missing_or_blank_claim_names_nobody(people: dict[str, Any]) -> None:
    for claims in ({"sub": "1"}, {"sub": "1", "preferred_username": "  "}, {"sub": "1", "preferred_username": 7}):
        refused = _refusal(claims)
        assert refused.code == "claim_missing" and "'preferred_username'" in refused.message


@override_settings(OIDC_USERNAME_CLAIM="email")
def test_by_email_only_a_verified_address_of_one_account_names_it(people: dict[str, Any]) -> None:
    officer, steward = people["compliance_officer"], people["data_steward"]
    User.objects.filter(pk=officer.pk).update(email="Officer@Example.org")
    verified = {"sub": "1", "email": "officer@example.org", "email_verified": True}
    assert user_for_claims(verified) == officer  # case-insensitive

    assert _refusal({**verified, "email_verified": False}).code == "email_not_verified"
    assert _refusal({**verified, "email_verified": "true"}).code == "email_not_verified"  # a string is no promise
    assert _refusal({"sub": "1", "email": "officer@example.org"}).code == "email_not_verified"
    assert _refusal({**verified, "email": "nobody@example.org"}).code == "unknown_user"

    User.objects.filter(pk=steward.pk).update(email="officer@example.org")
    ambiguous = _refusal(verified)
    assert ambiguous.code == "ambiguous_account" and "Several accounts" in ambiguous.message


def test_deactivated_service_and_non_staff_accounts_are_refused_by_name(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    User.objects.filter(pk=engineer.pk).update(is_active=False)
    inactive = _refusal({"sub": "1", "preferred_username": engineer.username})
    assert inactive.code == "inactive_account" and inactive.user.pk == engineer.pk
    assert inactive.message == f"The account {engineer.username} is deactivated; ask a platform admin."

    ci = service_account_create(actor=people["system"], username="ci-bot").user
    service = _refusal({"sub": "1", "preferred_username": "ci-bot"})
    assert service.code == "service_account" and service.user.pk == ci.pk and "API tokens" in service.message

    plain = User.objects.create_user(username="not-staff")
    not_staff = _refusal({"sub": "1", "preferred_username": plain.username})
    assert not_staff.code == "not_staff" and not_staff.user.pk == plain.pk


# --- A second factor asserted by the provider -----------------------------------------------------


@override_settings(OIDC_MFA_AMR_VALUES=["mfa", "otp", "hwk"], OIDC_MFA_ACR_VALUES=["urn:example:mfa"])
def test_the_provider_asserts_mfa_by_amr_or_a_configured_acr() -> None:
    assert idp_asserted_mfa({"amr": ["pwd", "otp"]}) == "amr:otp"
    assert idp_asserted_mfa({"amr": ["hwk"]}) == "amr:hwk"
    assert idp_asserted_mfa({"amr": "mfa"}) == "amr:mfa"  # a lone string, read as one value
    assert idp_asserted_mfa({"acr": "urn:example:mfa", "amr": ["pwd"]}) == "acr:urn:example:mfa"
    for claims in ({}, {"amr": ["pwd"]}, {"amr": ["pwd", "sms-but-not-configured"]}, {"amr": {"otp": True}},
                   {"amr": [["otp"]]}, {"acr": "urn:example:password"}, {"acr": ["urn:example:mfa"]}):  # fmt: skip
        assert idp_asserted_mfa(claims) is None, claims


# --- The ID token ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(key: Any, algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "42", "iat": now, "exp": now + 300, "nonce": "n", **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


@override_settings(OIDC_RP_CLIENT_ID=CLIENT_ID, OIDC_OP_ISSUER=ISSUER)
def test_an_id_token_counts_only_from_our_issuer_for_us_in_rs256(signing_key: rsa.RSAPrivateKey) -> None:
    backend, public = OIDCBackend(), signing_key.public_key()
    assert backend.get_payload_data(_token(signing_key), public)["sub"] == "42"
    assert backend.get_payload_data(_token(signing_key, aud=[CLIENT_ID, "other"], azp=CLIENT_ID), public)

    refused: dict[str, Any] = {
        "another issuer": _token(signing_key, iss="https://sso.example.org/realms/other"),
        "another audience": _token(signing_key, aud="another-client"),
        "expired": _token(signing_key, exp=int(time.time()) - 3600),
        "no subject": _token(signing_key, sub=None),
        "no audience": _token(signing_key, aud=None),
        "another key": _token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "several audiences, no azp": _token(signing_key, aud=[CLIENT_ID, "other"]),
        "issued to another party": _token(signing_key, azp="other"),
        # The classic confusion: an HMAC "signed" with the provider's public key.
        "HS256": _token(b"a shared secret nobody should accept here", algorithm="HS256"),
    }
    for why, token in refused.items():
        with pytest.raises((SuspiciousOperation, jwt.PyJWTError)):
            backend.get_payload_data(token, public)
            pytest.fail(f"accepted an ID token with {why}")


# Every endpoint set (so no discovery), at an address where nothing listens.
NOWHERE = {f"OIDC_OP_{name}_ENDPOINT": f"http://127.0.0.1:9/{name}" for name in ("AUTHORIZATION", "TOKEN", "USER")}
NOWHERE["OIDC_OP_JWKS_ENDPOINT"] = "http://127.0.0.1:9/jwks"


@override_settings(OIDC_RP_CLIENT_ID=CLIENT_ID, OIDC_OP_ISSUER=ISSUER, **NOWHERE)
def test_the_backend_is_never_offered_a_password(people: dict[str, Any]) -> None:
    """Django offers a backend only the credentials its ``authenticate`` takes: a password sign-in
    never reaches the provider, even with a code and state planted in the login page's query."""
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    officer = people["compliance_officer"]
    officer.set_password("correct horse battery staple")
    officer.save()
    request = RequestFactory().post("/admin/login/?code=planted&state=planted")
    request.session = {}  # type: ignore[assignment]
    # The single sign-on backend first: had it been asked, it would have left its refusal on the request.
    backends = ["governance.oidc.OIDCBackend", "django.contrib.auth.backends.ModelBackend"]
    with override_settings(AUTHENTICATION_BACKENDS=backends):
        user = authenticate(request, username=officer.username, password="correct horse battery staple")
    assert user == officer and user.backend == "django.contrib.auth.backends.ModelBackend"
    assert not hasattr(request, "oidc_refusal") and not hasattr(request, "security_login_failure")


# --- The session flag and django-axes -------------------------------------------------------------


def test_the_idp_mfa_flag_verifies_the_session_of_its_user_only(people: dict[str, Any]) -> None:
    steward, officer = people["data_steward"], people["compliance_officer"]
    client = Client()
    client.force_login(steward)
    assert client.get("/admin/").status_code == 302  # signed in, not verified: back to the login
    assert client.get("/api/v1/me").status_code in (401, 403)

    session = client.session
    session[IDP_MFA_SESSION_KEY] = {"user": str(officer.pk), "by": "amr:otp"}
    session.save()
    assert client.get("/admin/").status_code == 302  # a flag given to someone else counts for nothing

    session[IDP_MFA_SESSION_KEY] = {"user": str(steward.pk), "by": "amr:otp"}
    session.save()
    assert client.get("/admin/").status_code == 200
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["username"] == steward.username

    client.post("/admin/logout/")
    assert IDP_MFA_SESSION_KEY not in client.session
    assert client.get("/admin/").status_code == 302


def test_axes_counts_password_attempts_only() -> None:
    assert axes_counts_passwords_only(None, {"nonce": "n", "code_verifier": "v"}) is True  # type: ignore[arg-type]
    assert axes_counts_passwords_only(None, {"username": None, "password": None}) is True  # type: ignore[arg-type]
    assert axes_counts_passwords_only(None, {"username": "x", "password": "****"}) is False  # type: ignore[arg-type]
    assert axes_counts_passwords_only(None, None) is True  # type: ignore[arg-type]
