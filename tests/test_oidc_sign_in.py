"""Single sign-on to the admin against a real OpenID Connect provider (tests/oidc_provider:
django-oauth-toolkit in its own process on loopback), in a real browser.

The person clicks "Sign in with Test IdP" on the admin's login page, signs in on the provider's
own form, allows the application, and comes back: a staff account whose provider did not assert
a second factor goes on to enrol an authenticator, as after a password; one whose ID token says
``amr: [pwd, otp]`` lands on the admin's home, and its session also opens the API. A name no
account holds, and a deactivated account, are refused on the login page with the reason, and
nothing is created. Every outcome is a security event; django-axes counts none of them.
"""

from __future__ import annotations

import importlib
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import clear_url_caches
from django_otp.plugins.otp_totp.models import TOTPDevice

from audits.ledger.keys import SignerKey, write_signer_keys
from common.security_log import username_digest
from conftest import ROOT, subprocess_env
from governance.oidc import SignInRefused, provider_endpoints
from tests.browser import Pages, browser, code_from
from tests.oidc_provider import Provider, start_provider

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
User = get_user_model()

PROVIDER_NAME = "Test IdP"
CLIENT_ID = "llmops-governance"
CLIENT_SECRET = secrets.token_urlsafe(32)
IDP_PASSWORD = "the provider's own password"
# The provider's users: the first three are accounts of the service (made by the people
# fixture), the last is not.
IDP_USERS = [
    {"username": "compliance-officer", "password": IDP_PASSWORD, "email": "officer@example.org"},
    {"username": "data-steward", "password": IDP_PASSWORD, "email": "steward@example.org", "amr": ["pwd", "otp"]},
    {"username": "ml-engineer", "password": IDP_PASSWORD, "email": "engineer@example.org"},
    {"username": "stranger", "password": IDP_PASSWORD, "email": "stranger@example.org", "amr": ["pwd", "otp"]},
]


@pytest.fixture(scope="module")
def provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_provider(
        tmp_path_factory.mktemp("oidc-provider"), redirect_uri=f"{live_server.url}/oidc/callback/",
        users=IDP_USERS, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
    )  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


def _reload_urls() -> None:
    """config/urls.py mounts /oidc/ only when single sign-on is configured: read it again."""
    importlib.reload(importlib.import_module(settings.ROOT_URLCONF))
    clear_url_caches()


@pytest.fixture
def sso(provider: Provider) -> Iterator[Provider]:
    """The service configured as a deployment would be (issuer and client only: the endpoints
    come from discovery), with the backend settings/base.py adds when single sign-on is on."""
    backends = list(settings.AUTHENTICATION_BACKENDS)
    backends.insert(backends.index("django.contrib.auth.backends.ModelBackend") + 1, "governance.oidc.OIDCBackend")
    configured = override_settings(
        OIDC_ENABLED=True, OIDC_RP_CLIENT_ID=CLIENT_ID, OIDC_RP_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_OP_ISSUER=provider.issuer, OIDC_PROVIDER_NAME=PROVIDER_NAME, AUTHENTICATION_BACKENDS=backends,
    )  # fmt: skip
    configured.enable()
    try:
        _reload_urls()
        yield provider
    finally:
        configured.disable()
        _reload_urls()


def _sign_in_at_the_provider(pages: Pages, provider: Provider, username: str, *, shots: bool) -> None:
    """From the admin's login page through the provider's login and consent pages."""
    from playwright.sync_api import expect

    page = pages.page
    pages.goto("/admin/")
    page.wait_for_selector("form#login-form")  # the password form is still there
    expect(page.locator("#sso-link")).to_have_text(f"Sign in with {PROVIDER_NAME}")
    if shots:
        pages.shot("login")
    page.click("#sso-link")
    page.wait_for_selector("form#provider-login")
    assert page.url.startswith(provider.issuer.removesuffix("/o") + "/login/")  # the provider's own page
    if shots:
        pages.shot("provider-login", accessible=False)  # a test fixture's page, not the project's
    page.fill("#id_username", username)
    page.fill("#id_password", IDP_PASSWORD)
    page.click("form#provider-login [type=submit]")
    page.wait_for_selector("form#authorizationForm")
    if shots:
        pages.shot("provider-consent", accessible=False)
    page.click("form#authorizationForm button[name=allow]")


def _events(security_events: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in security_events if e["event"] == event]


@pytest.mark.one_pass("embedded")
def test_a_staff_user_signs_in_with_the_provider_then_enrols_an_authenticator(
    people: dict[str, Any], sso: Provider, live_server: Any, security_events: list[dict[str, Any]]
) -> None:
    from playwright.sync_api import expect

    officer = people["compliance_officer"]
    users_before = User.objects.count()
    with browser(live_server.url, "oidc-sign-in-then-totp") as pages:
        page = pages.page
        _sign_in_at_the_provider(pages, sso, officer.username, shots=True)
        # The provider did not assert a second factor: the admin asks for one, as after a password.
        page.wait_for_url(re.compile(r"/admin/mfa/enrol/\?next=%2Fadmin%2F"))
        expect(page.locator("#content-main")).to_contain_text(f"Signed in as {officer.username} (no second factor yet)")
        secret = page.inner_text("#mfa-secret")
        pages.shot("mfa-enrol")
        page.fill("input[name=token]", code_from(secret))
        page.click("#mfa-enrol-form [type=submit]")
        page.wait_for_selector("#mfa-backup-codes")
        pages.shot("mfa-enrolled")
        page.click("#mfa-continue")
        page.wait_for_selector("#site-name")
        expect(page.locator("#user-tools")).to_contain_text(officer.username)
        pages.shot("home")

    assert User.objects.count() == users_before
    assert TOTPDevice.objects.filter(user=officer, confirmed=True).count() == 1
    [signed_in] = _events(security_events, "auth.login.succeeded")
    assert signed_in["reason"] == "oidc" and signed_in["idp_mfa"] is None
    assert signed_in["username"] == officer.username and signed_in["auth_method"] == "session"
    assert [e["step"] for e in _events(security_events, "auth.mfa.succeeded")] == ["enrol"]


@pytest.mark.one_pass("embedded")
def test_a_second_factor_asserted_by_the_provider_lands_on_the_admin_home(
    people: dict[str, Any], sso: Provider, live_server: Any, security_events: list[dict[str, Any]]
) -> None:
    from playwright.sync_api import expect

    steward = people["data_steward"]
    with browser(live_server.url, "oidc-sign-in-with-provider-mfa") as pages:
        page = pages.page
        _sign_in_at_the_provider(pages, sso, steward.username, shots=False)
        page.wait_for_selector("#site-name")
        assert re.search(r"/admin/$", page.url), page.url
        expect(page.locator("#user-tools")).to_contain_text(steward.username)
        pages.shot("home")
        # The same session is verified for the API too (its session authentication asks is_verified).
        me = page.request.get(f"{live_server.url}/api/v1/me")
        assert me.status == 200 and me.json()["username"] == steward.username

    assert not TOTPDevice.objects.filter(user=steward).exists()  # nothing enrolled, nothing asked
    [signed_in] = _events(security_events, "auth.login.succeeded")
    assert signed_in["reason"] == "oidc" and signed_in["idp_mfa"] == "amr:otp"
    assert signed_in["username"] == steward.username
    assert not _events(security_events, "auth.mfa.succeeded")


@pytest.mark.one_pass("embedded")
def test_a_name_no_account_holds_is_refused_and_nothing_is_created(
    people: dict[str, Any], sso: Provider, live_server: Any, security_events: list[dict[str, Any]]
) -> None:
    from playwright.sync_api import expect

    users_before = User.objects.count()
    with browser(live_server.url, "oidc-unknown-user-refused") as pages:
        page = pages.page
        _sign_in_at_the_provider(pages, sso, "stranger", shots=False)
        page.wait_for_url(re.compile(r"/admin/login/$"))
        expect(page.locator(".messagelist .error")).to_have_text(
            f"No account here matches stranger from {PROVIDER_NAME}, and signing in does not create one: "
            "ask a platform admin to open your account."
        )
        page.wait_for_selector("form#login-form")
        pages.shot("refused")
        page.emulate_media(color_scheme="dark")  # the admin's dark theme: the button and the error stay readable
        pages.shot("refused-dark")

    assert User.objects.count() == users_before and not User.objects.filter(username="stranger").exists()
    assert not _events(security_events, "auth.login.succeeded")
    [failed] = _events(security_events, "auth.login.failed")
    assert failed["reason"] == "unknown_user" and failed["auth_method"] == "oidc"
    assert failed["username"] == "anonymous" and failed["attempted_username_hmac"] == username_digest("stranger")
    assert not AccessAttempt.objects.exists()  # not a password guess: django-axes counts nothing


@pytest.mark.one_pass("embedded")
def test_a_deactivated_account_is_refused(
    people: dict[str, Any], sso: Provider, live_server: Any, security_events: list[dict[str, Any]]
) -> None:
    from playwright.sync_api import expect

    engineer = people["ml_engineer"]
    User.objects.filter(pk=engineer.pk).update(is_active=False)
    with browser(live_server.url, "oidc-inactive-user-refused") as pages:
        page = pages.page
        _sign_in_at_the_provider(pages, sso, engineer.username, shots=False)
        page.wait_for_url(re.compile(r"/admin/login/$"))
        expect(page.locator(".messagelist .error")).to_have_text(
            f"The account {engineer.username} is deactivated; ask a platform admin."
        )
        pages.shot("refused")

    [failed] = _events(security_events, "auth.login.failed")
    assert failed["reason"] == "inactive_account" and failed["user_id"] == engineer.pk
    assert not _events(security_events, "auth.login.succeeded")
    assert not AccessAttempt.objects.exists()


# --- Without a browser ----------------------------------------------------------------------------


def test_discovery_must_name_the_configured_issuer(sso: Provider) -> None:
    endpoints = provider_endpoints()
    assert endpoints.token == f"{sso.issuer}/token/" and endpoints.jwks.startswith(sso.issuer)
    # The same document read under a look-alike issuer (a trailing slash) is not trusted.
    with override_settings(OIDC_OP_ISSUER=f"{sso.issuer}/"), pytest.raises(SignInRefused) as refused:
        provider_endpoints()
    assert refused.value.code == "provider_error"


def test_the_callback_without_a_sign_in_in_progress_says_so(
    people: dict[str, Any], sso: Provider, security_events: list[dict[str, Any]]
) -> None:
    client = Client()
    declined = client.get("/oidc/callback/?error=access_denied&state=whatever", follow=True)
    assert declined.redirect_chain[0] == ("/admin/login/", 302)
    assert f"Sign-in with {PROVIDER_NAME} did not finish (access_denied)" in declined.content.decode()

    # A code and state this browser never asked for (a forged or replayed answer).
    client.get("/oidc/authenticate/?next=/admin/")  # a sign-in in progress, with its own state
    forged = client.get("/oidc/callback/?code=stolen&state=not-ours", follow=True)
    assert forged.redirect_chain[0] == ("/admin/login/", 302)
    assert "did not start in this browser" in forged.content.decode()
    assert [e["reason"] for e in _events(security_events, "auth.login.failed")] == [
        "provider_refused",
        "state_mismatch",
    ]
    assert "_auth_user_id" not in client.session


def test_the_password_form_still_signs_in_when_single_sign_on_is_on(people: dict[str, Any], sso: Provider) -> None:
    officer, password = people["compliance_officer"], "correct horse battery staple"
    officer.set_password(password)
    officer.save()
    client = Client()
    page = client.get("/admin/login/?next=/admin/").content.decode()
    assert 'id="login-form"' in page and 'href="/oidc/authenticate/?next=%2Fadmin%2F"' in page
    signed_in = client.post("/admin/login/?next=/admin/", {"username": officer.username, "password": password})
    assert signed_in.status_code == 302 and signed_in["Location"].startswith("/admin/mfa/verify/")


def test_the_login_page_offers_no_single_sign_on_when_it_is_off() -> None:
    page = Client().get("/admin/login/").content.decode()
    assert 'id="login-form"' in page and "sso-link" not in page
    assert Client().get("/oidc/authenticate/").status_code == 404


# --- Settings ------------------------------------------------------------------------------------

GOOD = {
    "OIDC_RP_CLIENT_ID": CLIENT_ID,
    "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
    "OIDC_OP_ISSUER": "https://sso.example.org",
}


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({**GOOD, "OIDC_RP_CLIENT_SECRET": ""}, "OIDC_RP_CLIENT_SECRET", "is required when OIDC_RP_CLIENT_ID is set"),
        ({**GOOD, "OIDC_OP_ISSUER": ""}, "OIDC_OP_ISSUER", "the provider's issuer URL"),
        ({**GOOD, "OIDC_OP_ISSUER": "sso.example.org"}, "OIDC_OP_ISSUER", "expected an http:// or https:// URL"),
        ({**GOOD, "OIDC_OP_JWKS_ENDPOINT": "ftp://sso.example.org/jwks"}, "OIDC_OP_JWKS_ENDPOINT", "https://"),
        ({**GOOD, "OIDC_RP_SCOPES": "profile email"}, "OIDC_RP_SCOPES", "must include openid"),
        ({**GOOD, "OIDC_USERNAME_CLAIM": "sub"}, "OIDC_USERNAME_CLAIM", "preferred_username or email"),
        ({**GOOD, "OIDC_TIMEOUT_S": "soon"}, "OIDC_TIMEOUT_S", "expected an integer"),
    ],
    ids=["no-secret", "no-issuer", "issuer-not-a-url", "endpoint-not-http", "no-openid-scope", "unknown-claim",
         "timeout-not-a-number"],
)  # fmt: skip
@pytest.mark.own_service
def test_a_bad_single_sign_on_setting_stops_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str, says: str
) -> None:
    """What the operator reads when single sign-on is half configured: one line naming the variable."""
    key = tmp_path / "keys" / "ledger-signing.key"
    write_signer_keys(key, [SignerKey.generate("test.example/ledger")])
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=subprocess_env(embedded=True, GOV_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env),
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ") and says in lines[0], lines[0]


@pytest.mark.own_service
def test_a_complete_single_sign_on_configuration_starts_without_reaching_the_provider(tmp_path: Path) -> None:
    """Discovery waits for the first sign-in: start-up with a provider nobody can reach succeeds."""
    key = tmp_path / "keys" / "ledger-signing.key"
    write_signer_keys(key, [SignerKey.generate("test.example/ledger")])
    env = {**GOOD, "OIDC_OP_ISSUER": "http://127.0.0.1:9/realms/staff"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=subprocess_env(embedded=True, GOV_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **env),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
