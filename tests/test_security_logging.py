"""Security events (common/security_log.py) and the promise that no log line holds a secret or
personal data.

The canary test plants one random value as a password, an attempted username, an API token, a
data-subject identifier and a decision's reason in request bodies, a cookie, a fake session id,
the Authorization header and query strings; drives real views through Django's test client, with
logins and API calls that fail and succeed; captures every record every logger emits (a handler on
the root logger and on each logger that does not propagate, every logger at DEBUG) and formats
each one as the configured handlers do, in the JSON format and in the text one; the canary, the
real token, the session id and the CSRF token appear in none of the lines.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from common.logging import JsonFormatter, RequestIdFilter
from common.security_log import username_digest
from governance.roles import Role
from governance.services import api_token_create, approval_request_submit
from registry.models import PiiScan
from registry.services import dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset

ACTION = "dataset_version.use_for_training"
PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[_Capture]:
    """Every record of every logger, at every level, while the test runs."""
    capture = _Capture()
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    saved = [(lg, lg.level) for lg in loggers]
    attached = [lg for lg in loggers if lg is logging.getLogger() or not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in attached:
        lg.addHandler(capture)
    try:
        yield capture
    finally:
        for lg in attached:
            lg.removeHandler(capture)
        for lg, level in saved:
            lg.setLevel(level)


def _lines(capture: _Capture) -> list[str]:
    """Each record as the configured handlers write it, and in both formats the settings offer."""
    configured = [h for h in logging.getLogger().handlers if not isinstance(h, _Capture) and h.formatter]
    text = logging.Formatter(settings.LOGGING["formatters"]["text"]["format"])
    json_formatter, request_id = JsonFormatter(), RequestIdFilter()
    lines = []
    for record in capture.records:
        request_id.filter(record)
        for handler in configured:
            if handler.filter(record):
                lines.append(handler.format(record))
        lines += [json_formatter.format(record), text.format(record)]
    return lines


def _events(capture: _Capture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in capture.records if r.name == "security"]


def _version(people: dict[str, Any]) -> Any:
    dataset = make_dataset(people, slug=f"canary{secrets.token_hex(3)}")
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=b'{"text": "nothing personal"}\n'
    )
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    version.refresh_from_db()
    return version


def _token(user: Any) -> str:
    return api_token_create(actor=user, user=user, name="canary test")[1]


def _drive(people: dict[str, Any], canary: str) -> dict[str, Any]:
    """Logins and API calls that fail and succeed, each carrying the canary somewhere."""
    User = get_user_model()
    officer = User.objects.create_user(username="officer-canary", password=canary, is_staff=True)
    seen: dict[str, Any] = {"officer": officer}
    basic = base64.b64encode(f"{canary}:{canary}".encode()).decode()

    browser = Client()
    browser.cookies["tracker"] = canary
    login = f"/admin/login/?next=/admin/&token={canary}"
    wrong = browser.post(
        login, {"username": officer.username, "password": canary + "-wrong"}, HTTP_AUTHORIZATION=f"Basic {basic}"
    )
    unknown = browser.post(login, {"username": canary, "password": canary})
    assert wrong.status_code == unknown.status_code == 200  # the form again, with its error
    right = browser.post(login, {"username": officer.username, "password": canary})
    assert right.status_code == 302, right.content[:500]
    seen.update(wrong=wrong, unknown=unknown, right=right, session_id=browser.cookies["sessionid"].value)
    seen["csrf"] = browser.cookies["csrftoken"].value if "csrftoken" in browser.cookies else None

    strict = Client(enforce_csrf_checks=True)
    strict.cookies["tracker"] = canary
    seen["csrf_refused"] = strict.post(f"/admin/login/?secret={canary}", {"username": canary, "password": canary})
    assert seen["csrf_refused"].status_code == 403

    api = Client()
    api.cookies["tracker"] = canary
    api.cookies["sessionid"] = canary  # no such session: an anonymous caller
    compliance = people[Role.COMPLIANCE_OFFICER.value]
    token = _token(compliance)
    seen["token"] = token
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    seen["me"] = api.get(f"/api/v1/me?access_token={canary}", **auth)
    assert seen["me"].status_code == 200
    for name, header in {
        "bad_token": f"Token gov_0123456789ab_{canary}",
        "bearer": f"Bearer {canary}",
        "malformed": f"Token {canary} {canary}",
        "basic": f"Basic {basic}",
    }.items():
        seen[name] = api.get(f"/api/v1/approvals/?q={canary}", HTTP_AUTHORIZATION=header)
        assert seen[name].status_code == 401, (name, seen[name].content)
    seen["anonymous"] = api.get(f"/api/v1/approvals/?q={canary}")
    assert seen["anonymous"].status_code == 401

    # Personal data in a request body: a data-subject request's identifier.
    body = {
        "regime": "gdpr", "kind": "access", "channel": "email", "received_at": datetime.now(UTC).isoformat(),
        "identifiers": [{"kind": "email", "value": f"{canary}@example.org"}, {"kind": "name", "value": canary}],
    }  # fmt: skip
    url = f"/api/v1/privacy/projects/{people['project'].slug}/requests/?email={canary}"
    seen["dsr"] = api.post(url, body, content_type="application/json", **auth)
    assert seen["dsr"].status_code == 201, seen["dsr"].content
    auditor = {"HTTP_AUTHORIZATION": f"Token {_token(people[Role.AUDITOR.value])}"}
    seen["dsr_auditor"] = api.post(url, body, content_type="application/json", **auditor)
    assert seen["dsr_auditor"].status_code == 403
    outsider = User.objects.create_user(username="outsider-canary")
    stranger = {"HTTP_AUTHORIZATION": f"Token {_token(outsider)}"}
    seen["dsr_outsider"] = api.post(url, body, content_type="application/json", **stranger)
    assert seen["dsr_outsider"].status_code == 404
    seen["lookup"] = api.post(
        f"/api/v1/projects/{people['project'].slug}/data-subjects/lookup",
        {"kind": "email", "identifier": f"{canary}@example.org"}, content_type="application/json", **auth,
    )  # fmt: skip

    # Decisions refused by separation of duties, by role and by state; the reason holds the canary.
    version = _version(people)
    request = approval_request_submit(
        actor=people[Role.ML_ENGINEER.value], subject_type="dataset_version", subject_id=str(version.pk),
        action=ACTION, context={}, comment=canary,
    )  # fmt: skip
    decide = f"/api/v1/approvals/{request.pk}"
    reason = {"reason": canary}
    engineer = {"HTTP_AUTHORIZATION": f"Token {_token(people[Role.ML_ENGINEER.value])}"}
    steward = {"HTTP_AUTHORIZATION": f"Token {_token(people[Role.DATA_STEWARD.value])}"}
    seen["self_approval"] = api.post(f"{decide}/approve", reason, content_type="application/json", **engineer)
    seen["not_an_approver"] = api.post(f"{decide}/approve", reason, content_type="application/json", **auditor)
    seen["hidden"] = api.post(f"{decide}/approve", reason, content_type="application/json", **stranger)
    seen["approved"] = api.post(f"{decide}/approve", reason, content_type="application/json", **steward)
    seen["closed"] = api.post(f"{decide}/reject", reason, content_type="application/json", **steward)
    assert [seen[k].status_code for k in ("self_approval", "not_an_approver", "hidden", "approved", "closed")] == [
        422, 403, 404, 200, 409,
    ]  # fmt: skip
    seen["request"] = request
    return seen


@pytest.mark.django_db
def test_no_log_line_holds_a_secret_or_personal_data(people: dict[str, Any], captured: _Capture) -> None:
    canary = f"canary{secrets.token_hex(16)}"
    seen = _drive(people, canary)
    lines = _lines(captured)
    assert len(captured.records) > 30, "too few log records: is the capture attached?"
    assert {r.name for r in captured.records} >= {"security", "django.request", "django.security.csrf"}
    secret_part = seen["token"].split("_", 2)[2]
    planted = {
        "canary": canary, "token": seen["token"], "token secret": secret_part, "session id": seen["session_id"],
        **({"csrf token": seen["csrf"]} if seen["csrf"] else {}),
    }  # fmt: skip
    leaks = [(what, line[:400]) for line in lines for what, value in planted.items() if value in line]
    assert not leaks, "secrets or personal data in log lines:\n" + "\n".join(f"{w}: {line}" for w, line in leaks)


@pytest.mark.django_db
def test_lockouts_are_logged_without_the_token_or_the_codes(people: dict[str, Any], captured: _Capture) -> None:
    """The failed-token lockout (counted per whole token sent: a hash of it keys the counter) and the
    second-factor lockout: their lines name the address, the token's public prefix and the account,
    never a token's secret part or a code."""
    from django.core.cache import caches
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    canary = f"canary{secrets.token_hex(16)}"
    officer = get_user_model().objects.create_user(username="officer-lockout", password=canary, is_staff=True)
    device = TOTPDevice.objects.create(user=officer, name="authenticator", confirmed=True)
    lockouts = {"API_TOKEN_LOCKOUT_FAILURES": 2, "MFA_LOCKOUT_FAILURES": 2, "OTP_TOTP_THROTTLE_FACTOR": 0}
    caches["counters"].clear()
    try:
        with override_settings(**lockouts):
            api, header = Client(), f"Token gov_0123456789ab_{canary}"
            codes = [api.get("/api/v1/me", HTTP_AUTHORIZATION=header, REMOTE_ADDR=f"198.51.100.{i}") for i in range(3)]
            assert [response.status_code for response in codes] == [401, 401, 429]
            browser = Client()
            assert browser.post("/admin/login/", {"username": officer.username, "password": canary}).status_code == 302
            right_code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
            wrong_code = "000000" if right_code != "000000" else "111111"
            answers = [browser.post("/admin/mfa/verify/", {"token": wrong_code}).status_code for _ in range(3)]
            assert answers == [200, 403, 403]
    finally:
        caches["counters"].clear()
    lines = _lines(captured)
    locked = [r for r in captured.records if r.getMessage() == "api token authentication locked out"]
    assert [(r.lockout, r.token_prefix) for r in locked] == [("guess", "0123456789ab")]  # type: ignore[attr-defined]
    events = _events(captured)
    assert [e["reason"] for e in events if e["event"] == "auth.mfa.failed"] == ["invalid_code"] * 2 + ["locked_out"] * 2
    assert not [line[:300] for line in lines if canary in line]


def _one(events: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [e for e in events if all(e.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(e["event"], e["reason"], e.get("status")) for e in events])
    return found[0]


@pytest.mark.django_db
def test_logins_refusals_and_denied_decisions_are_logged_with_who_what_where(
    people: dict[str, Any], captured: _Capture
) -> None:
    canary = f"canary{secrets.token_hex(16)}"
    seen = _drive(people, canary)
    events = _events(captured)
    officer = seen["officer"]
    required = {"time", "level", "event", "outcome", "reason", "user_id", "username", "http_method", "path",
                "client_ip", "request_id"}  # fmt: skip
    for event in events:
        assert required <= event.keys(), event
        assert event["time"].endswith("+00:00")

    ok = _one(events, event="auth.login.succeeded", auth_method="session")
    assert (ok["user_id"], ok["username"], ok["outcome"]) == (officer.pk, officer.username, "success")
    assert (ok["http_method"], ok["path"], ok["client_ip"]) == ("POST", "/admin/login/", "127.0.0.1")
    assert ok["request_id"] == seen["right"]["X-Request-ID"] and ok["level"] == "INFO"

    wrong = _one(events, event="auth.login.failed", reason="invalid_credentials")
    assert (wrong["user_id"], wrong["username"], wrong["level"]) == (officer.pk, officer.username, "WARNING")
    assert wrong["request_id"] == seen["wrong"]["X-Request-ID"]
    unknown = _one(events, event="auth.login.failed", reason="unknown_user")
    assert (unknown["user_id"], unknown["username"]) == (None, "anonymous")
    assert unknown["attempted_username_hmac"] == username_digest(canary)

    csrf = _one(events, event="authz.denied", reason="http_403")
    assert (csrf["path"], csrf["status"], csrf["username"]) == ("/admin/login/", 403, "anonymous")

    compliance = people[Role.COMPLIANCE_OFFICER.value]
    token_ok = [e for e in events if e["event"] == "auth.login.succeeded" and e["auth_method"] == "token"]
    assert any(e["user_id"] == compliance.pk and e["path"] == "/api/v1/me" for e in token_ok)
    assert all(isinstance(e["token_id"], int) for e in token_ok)
    token_failed = [e for e in events if e["event"] == "auth.login.failed" and e["auth_method"] == "token"]
    assert sorted(e["reason"] for e in token_failed) == ["invalid_token", "invalid_token", "malformed_header"]
    assert {e["username"] for e in token_failed} == {"anonymous"}
    unauthenticated = [e for e in events if e["event"] == "authz.denied" and e["status"] == 401]
    assert sorted(e["reason"] for e in unauthenticated) == ["authentication_failed"] * 3 + ["not_authenticated"] * 2

    auditor, outsider = people[Role.AUDITOR.value], get_user_model().objects.get(username="outsider-canary")
    dsr = [e for e in events if e["event"] == "authz.denied" and e["path"].endswith("/requests/")]
    assert {(e["status"], e["user_id"]) for e in dsr} == {(403, auditor.pk), (404, outsider.pk)}

    path = f"/api/v1/approvals/{seen['request'].pk}"
    self_approval = _one(events, event="approval.decision.denied", reason="self_approval")
    assert (self_approval["status"], self_approval["path"]) == (422, f"{path}/approve")
    assert self_approval["user_id"] == people[Role.ML_ENGINEER.value].pk
    assert self_approval["request_id"] == seen["self_approval"]["X-Request-ID"]
    assert _one(events, event="approval.decision.denied", reason="not_an_approver")["user_id"] == auditor.pk
    assert _one(events, event="approval.decision.denied", reason="request_closed")["status"] == 409
    hidden = _one(events, event="authz.denied", path=f"{path}/approve")
    assert (hidden["status"], hidden["reason"], hidden["user_id"]) == (404, "not_found", outsider.pk)


def test_django_request_lines_carry_the_path_not_the_query_string() -> None:
    from django.test import RequestFactory

    request = RequestFactory().get("/api/v1/approvals/?token=s3cret-value", REMOTE_ADDR="10.0.0.1")
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Forbidden: %s", (request.path,), None)
    record.request, record.status_code = request, 403
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request"] == "GET /api/v1/approvals/" and "s3cret" not in json.dumps(entry)
    served = logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s', ("GET /x?token=s3cret HTTP/1.1", "403", "58"), None
    )
    assert "s3cret" not in JsonFormatter().format(served)


def test_the_gunicorn_access_line_of_make_up_holds_no_query_string_referer_or_basic_user() -> None:
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from config.up import ACCESS_LOG_FORMAT

    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", ACCESS_LOG_FORMAT)
    gunicorn_logger = Logger(config)
    secret = f"canary{secrets.token_hex(8)}"
    environ = {
        "REQUEST_METHOD": "GET", "RAW_URI": f"/api/v1/me?token={secret}", "PATH_INFO": "/api/v1/me",
        "QUERY_STRING": f"token={secret}", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7",
        "HTTP_REFERER": f"https://example.org/?q={secret}",
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{secret}:{secret}".encode()).decode(),
    }  # fmt: skip
    response = SimpleNamespace(status="200 OK", sent=42, headers=[("X-Request-ID", "req-0123456789")])
    request = SimpleNamespace(headers=[("AUTHORIZATION", environ["HTTP_AUTHORIZATION"]), ("COOKIE", f"s={secret}")])
    atoms = gunicorn_logger.atoms_wrapper_class(
        gunicorn_logger.atoms(response, request, environ, timedelta(0, 0, 1500))
    )
    line = config.access_log_format % atoms
    assert '"GET /api/v1/me HTTP/1.1" 200 42' in line and "req-0123456789" in line and "10.0.0.7" in line
    assert secret not in line
