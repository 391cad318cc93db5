"""Second-factor lockout: ``MFA_LOCKOUT_FAILURES`` wrong codes in a row lock the account, the right
code included, until a platform admin of one of its projects lifts the lock with a reason in the
admin; the lock and the unlock are ledger entries and the sign-in page says what happened."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.roles import Role
from governance.services import project_create, project_role_grant

User = get_user_model()
pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def lockout_of_three(settings: Any) -> None:
    settings.MFA_LOCKOUT_FAILURES = 3
    # django-otp's own slowing down (1 s, 2 s, ... after a wrong code) is another mechanism, off
    # here so that the codes below are judged at once.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


@pytest.fixture
def officer(people: dict[str, Any]) -> Any:
    user = people["compliance_officer"]
    user.set_password(PASSWORD)
    user.save()
    TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    return user


@pytest.fixture
def project_admin(people: dict[str, Any]) -> Any:
    admin = User.objects.create_user(username="project-admin")
    project_role_grant(
        actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN, reason="admin"
    )
    return User.objects.get(pk=admin.pk)


def _code(user: Any, wrong: bool = False) -> str:
    device = TOTPDevice.objects.get(user=user)
    right = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    return ("000000" if right != "000000" else "111111") if wrong else right


def _signed_in_with_password(user: Any) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith("/admin/mfa/verify/")
    return client


def _entries(action: str) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(action=action).order_by("index")]


def test_wrong_codes_in_a_row_lock_the_account_until_a_platform_admin_unlocks_it(
    officer: Any, project_admin: Any, security_events: list[dict[str, Any]]
) -> None:
    client = _signed_in_with_password(officer)
    for left in (2, 1):
        wrong = client.post("/admin/mfa/verify/", {"token": _code(officer, wrong=True)})
        assert wrong.status_code == 200
        assert f"{left} more wrong code{'s' if left > 1 else ''} in a row will lock" in wrong.content.decode()
    locked = client.post("/admin/mfa/verify/", {"token": _code(officer, wrong=True)})
    assert locked.status_code == 403 and "Sign-in locked" in locked.content.decode()
    assert "3 wrong codes were offered for it in a row" in locked.content.decode()
    [entry] = _entries("mfa.locked_out")
    assert (entry["actor"]["name"], entry["subject"]["id"]) == ("system", str(officer.pk))
    assert entry["payload"] == {"username": officer.username, "failures": 3}

    # Locked: the right code is refused, in this session and in a new sign-in.
    refused = client.post("/admin/mfa/verify/", {"token": _code(officer)})
    assert refused.status_code == 403 and client.get("/admin/").status_code == 302
    again = _signed_in_with_password(officer)
    assert again.get("/admin/mfa/verify/").status_code == 403
    assert again.post("/admin/mfa/verify/", {"token": _code(officer)}).status_code == 403
    assert len(_entries("mfa.locked_out")) == 1  # a refused code while locked adds nothing

    # The project's platform admin lifts the lock in the admin, with a reason.
    admin = Client()
    admin_login(admin, project_admin)
    listed = admin.get("/admin/governance/secondfactorlock/").content.decode()
    assert officer.username in listed and "Unlock…" in listed
    from governance.models import SecondFactorLock

    lock = SecondFactorLock.objects.get(user=officer)
    page = f"/admin/governance/secondfactorlock/{lock.pk}/unlock/"
    assert "after 3 wrong codes in a row" in admin.get(page).content.decode()
    blank = admin.post(page, {"reason": "  "})
    assert blank.status_code == 200 and "nothing was unlocked" in blank.content.decode()
    assert admin.post(page, {"reason": "it was her, on a new phone"}).status_code == 302
    [unlocked] = _entries("mfa.unlocked")
    assert unlocked["actor"]["name"] == "project-admin"
    assert unlocked["payload"]["reason"] == "it was her, on a new phone" and unlocked["payload"]["failures"] == 3

    verified = again.post("/admin/mfa/verify/", {"token": _code(officer), "next": "/admin/"})
    assert verified.status_code == 302 and again.get("/admin/").status_code == 200
    lockouts = [e for e in security_events if e["event"] == "auth.mfa.failed" and e["reason"] == "locked_out"]
    assert len(lockouts) == 4 and {e["user_id"] for e in lockouts} == {officer.pk}


def test_a_right_code_starts_the_count_again(officer: Any) -> None:
    client = _signed_in_with_password(officer)
    for _ in range(2):
        assert client.post("/admin/mfa/verify/", {"token": _code(officer, wrong=True)}).status_code == 200
    assert client.post("/admin/mfa/verify/", {"token": _code(officer)}).status_code == 302
    other = _signed_in_with_password(officer)
    for _ in range(2):
        assert other.post("/admin/mfa/verify/", {"token": _code(officer, wrong=True)}).status_code == 200
    assert not Entry.objects.filter(action="mfa.locked_out").exists()


def test_a_locked_account_cannot_enrol_either(officer: Any) -> None:
    client = _signed_in_with_password(officer)
    for _ in range(3):
        client.post("/admin/mfa/verify/", {"token": _code(officer, wrong=True)})
    TOTPDevice.objects.filter(user=officer).delete()  # a reset does not lift the lock
    assert client.get("/admin/mfa/enrol/").status_code == 403


def test_who_may_lift_a_lock(officer: Any, project_admin: Any, people: dict[str, Any]) -> None:
    from common.errors import DomainError, PermissionDenied
    from governance.mfa import staff_mfa_failure_record, staff_mfa_unlock

    system = people["system"]
    assert staff_mfa_unlock(actor=system, user=officer, reason="nothing locked") is False
    for _ in range(3):
        staff_mfa_failure_record(user=officer)
    elsewhere = project_create(actor=system, slug="elsewhere", name="Elsewhere")
    outsider = User.objects.create_user(username="outsider")
    project_role_grant(actor=system, project=elsewhere, user=outsider, role=Role.PLATFORM_ADMIN, reason="x")
    start = Entry.objects.count()
    for actor in (officer, people["auditor"], outsider):
        with pytest.raises(PermissionDenied):
            staff_mfa_unlock(actor=actor, user=officer, reason="let me in")
    with pytest.raises(DomainError) as blank:
        staff_mfa_unlock(actor=project_admin, user=officer, reason=" ")
    assert blank.value.fields == {"reason": ["may not be blank"]} and Entry.objects.count() == start
    # Outsiders do not see the lock in the admin either.
    outside = Client()
    admin_login(outside, outsider)
    assert officer.username not in outside.get("/admin/governance/secondfactorlock/").content.decode()
    auditor = Client()
    admin_login(auditor, people["auditor"])
    assert auditor.get("/admin/governance/secondfactorlock/").status_code == 403

    assert staff_mfa_unlock(actor=project_admin, user=officer, reason="checked with her") is True
    assert staff_mfa_unlock(actor=project_admin, user=officer, reason="twice") is False
    assert [e["action"] for e in (json.loads(bytes(x.body)) for x in Entry.objects.filter(index__gte=start))] == [
        "mfa.unlocked"
    ]
