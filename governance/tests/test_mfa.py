"""The admin sign-in: password (django-axes lockout), then a TOTP second factor enrolled at the
first sign-in; a password-only session reaches neither the admin nor the API."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.mfa import staff_mfa_reset

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture
def officer(people: dict[str, Any]) -> Any:
    user = people["compliance_officer"]
    assert user.is_staff  # made staff by the role grant
    user.set_password(PASSWORD)
    user.save()
    return user


def _password(client: Client, username: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post("/admin/login/?next=/admin/ledger/entry/", {"username": username, "password": password}, **extra)


def _payload(entry: Entry) -> Any:
    return json.loads(bytes(entry.body))["payload"]


def _code(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The code the user's app shows now (or ``steps_ahead`` periods later: a code is good once)."""
    device.refresh_from_db()
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=steps_ahead):06d}"


def test_first_sign_in_enrols_an_authenticator_and_the_second_asks_for_a_code(
    officer: Any, security_events: list[dict[str, Any]]
) -> None:
    client = Client()
    signed_in = _password(client, officer.username)
    assert signed_in.status_code == 302 and signed_in["Location"].startswith("/admin/mfa/verify/?next=")
    # A password-only session: no admin page, no API.
    assert client.get("/admin/ledger/entry/").status_code == 302
    me = client.get("/api/v1/me")
    assert me.status_code in (401, 403) and "second factor" in me.json()["error"]["message"]

    verify = client.get(signed_in["Location"])
    assert verify.status_code == 302 and verify["Location"].startswith("/admin/mfa/enrol/")
    page = client.get(verify["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    uri = re.search(r'id="mfa-otpauth-uri"[^>]*>([^<]+)<', html)
    assert uri and uri.group(1).startswith("otpauth://totp/LLMOps%20governance%3A") and "<svg" in html
    device = TOTPDevice.objects.get(user=officer, confirmed=False)
    secret = re.search(r'id="mfa-secret">([^<]+)<', html).group(1).replace(" ", "")  # type: ignore[union-attr]
    assert secret in uri.group(1).replace("&amp;", "&")

    wrong = client.post(verify["Location"], {"token": "000000" if _code(device) != "000000" else "111111"})
    assert wrong.status_code == 200 and b"not valid" in wrong.content
    assert client.get("/admin/ledger/entry/").status_code == 302
    time.sleep(1.1)  # django-otp throttles the device for 1 s after a wrong code

    used = _code(device)
    enrolled = client.post(verify["Location"], {"token": used, "next": "/admin/ledger/entry/"})
    assert enrolled.status_code == 200
    backup_codes = re.findall(r"<li><code>([a-z0-9]+)</code></li>", enrolled.content.decode())
    assert len(backup_codes) == 8
    assert client.get("/admin/ledger/entry/").status_code == 200
    assert client.get("/api/v1/me").status_code == 200
    entry = Entry.objects.get(action="mfa.enrolled")
    assert entry.subject_id == str(officer.pk) and _payload(entry) == {"device": "totp", "backup_codes": 8}

    # The next sign-in asks for a code (the one used at enrolment is spent), or a backup code, once.
    again = Client()
    location = _password(again, officer.username)["Location"]
    assert again.get(location).status_code == 200  # the code form, no enrolment
    # The very code used at enrolment, replayed: refused (asking for the code "now" instead would be
    # another one once the 30 s window has turned, and rightly accepted).
    assert again.post(location, {"token": used}).status_code == 200
    time.sleep(1.1)
    done = again.post(location, {"token": _code(device, steps_ahead=1)})
    assert done.status_code == 302 and done["Location"] == "/admin/ledger/entry/"
    assert again.get("/admin/ledger/entry/").status_code == 200

    third = Client()
    location = _password(third, officer.username)["Location"]
    assert third.post(location, {"token": backup_codes[0]}).status_code == 302
    fourth = Client()
    location = _password(fourth, officer.username)["Location"]
    assert fourth.post(location, {"token": backup_codes[0]}).status_code == 200  # used up
    assert fourth.get("/admin/").status_code == 302

    # Every code offered is a security event (ASVS V16): who, which step, and whether it passed.
    enrol, verify_path = "/admin/mfa/enrol/", "/admin/mfa/verify/"
    mfa_events = [e for e in security_events if e["event"].startswith("auth.mfa.")]
    assert [(e["event"], e["reason"], e["step"], e["path"]) for e in mfa_events] == [
        ("auth.mfa.failed", "invalid_code", "enrol", enrol), ("auth.mfa.succeeded", "enrol", "enrol", enrol),
        ("auth.mfa.failed", "invalid_code", "verify", verify_path),
        ("auth.mfa.succeeded", "verify", "verify", verify_path),
        ("auth.mfa.succeeded", "verify", "verify", verify_path),
        ("auth.mfa.failed", "invalid_code", "verify", verify_path),
    ]  # fmt: skip
    assert {e["user_id"] for e in mfa_events} == {officer.pk}


def test_a_lost_authenticator_is_reset_by_a_platform_admin_and_enrolled_again(
    officer: Any, people: dict[str, Any]
) -> None:
    old_session = Client()
    admin_login(old_session, officer)
    assert old_session.get("/admin/").status_code == 200
    assert TOTPDevice.objects.filter(user=officer).exists()
    removed = staff_mfa_reset(actor=people["system"], user=officer, reason="phone lost")
    assert removed == 1 and not TOTPDevice.objects.filter(user=officer).exists()
    assert not StaticDevice.objects.filter(user=officer).exists()
    assert _payload(Entry.objects.get(action="mfa.reset")) == {
        "devices_removed": 1, "sessions_ended": 1, "reason": "phone lost",
    }  # fmt: skip
    # The session from before the reset is over: it cannot enrol an authenticator of its own.
    assert old_session.get("/admin/mfa/enrol/")["Location"].startswith("/admin/login/")
    client = Client()
    location = client.get(_password(client, officer.username)["Location"])["Location"]
    assert location.startswith("/admin/mfa/enrol/")


def test_a_password_only_session_can_sign_out(officer: Any) -> None:
    client = Client()
    _password(client, officer.username)
    assert client.post("/admin/mfa/sign-out/").status_code == 302
    assert client.get("/admin/mfa/verify/")["Location"].startswith("/admin/login/")


def test_the_sixth_password_attempt_is_locked_out_even_when_right(officer: Any) -> None:
    client = Client()
    for _ in range(4):
        refused = _password(client, officer.username, "wrong password")
        assert refused.status_code == 200 and b"Please enter the correct username and password" in refused.content
    assert _password(client, officer.username, "wrong password").status_code == 429  # the 5th failure locks
    locked = _password(client, officer.username)
    assert locked.status_code == 429 and b"Sign-in locked" in locked.content
    assert client.get("/admin/mfa/verify/").status_code == 302  # not signed in
    # The lock is per username and address: the officer elsewhere signs in.
    elsewhere = _password(Client(), officer.username, REMOTE_ADDR="192.0.2.7")
    assert elsewhere.status_code == 302 and elsewhere["Location"].startswith("/admin/mfa/verify/")


def test_admin_login_helper_gives_a_verified_session(people: dict[str, Any]) -> None:
    client = Client()
    admin_login(client, people["auditor"])
    assert client.get("/admin/ledger/entry/").status_code == 200
    password_only = Client()
    password_only.force_login(people["auditor"])
    assert password_only.get("/admin/ledger/entry/").status_code == 302
