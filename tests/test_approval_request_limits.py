"""Rate limits on the approval and report endpoints, and the failed-token lockout: 429 in the
API's error shape with Retry-After, counted in the real counter store (the SQLite counter cache)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client

from audits.ledger.models import Entry
from governance.services import api_token_create, approval_request_submit
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db
ROOM_S = 10  # seconds a test's counted requests may take, at most, inside one window


@pytest.fixture(autouse=True)
def fresh_counters(settings: Any) -> Iterator[None]:
    """The limits of the embedded default, counted from zero (the test settings turn them off)."""
    settings.API_RATE_LIMITS = {
        "approvals.decide": "2/m",
        "approvals.list": "3/m",
        "reports.generate": "1/m",
        "reports.read": "2/m",
    }
    settings.API_TOKEN_LOCKOUT_FAILURES = 3
    caches["counters"].clear()
    _window_with_room()
    yield
    caches["counters"].clear()


def _window_with_room() -> None:
    """The counters keep fixed windows (a minute here; the lockout's 900 s, whose ends are ends of
    minutes too). Requests counted within seconds of a window's end would be counted in two
    windows and reach no limit (it happened once, at 19:45:00): wait for the next one then."""
    left = 60 - time.time() % 60
    if left < ROOM_S:
        time.sleep(left + 0.05)


def _token(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}


def _assert_429(response: Any, code: str) -> None:
    assert response.status_code == 429, response.content
    body = response.json()["error"]
    assert body["code"] == code and body["message"]
    assert int(response["Retry-After"]) >= 1


def test_the_inbox_is_limited_per_user(people: dict[str, Any]) -> None:
    client, steward = Client(), _token(people["data_steward"])
    for _ in range(3):
        assert client.get("/api/v1/approvals/", **steward).status_code == 200
    _assert_429(client.get("/api/v1/approvals/", **steward), "throttled")
    # Another user has their own count; other endpoints are not limited.
    assert client.get("/api/v1/approvals/", **_token(people["auditor"])).status_code == 200
    assert client.get("/api/v1/me", **steward).status_code == 200


def test_decisions_share_one_limit(people: dict[str, Any]) -> None:
    from django.test import override_settings

    from registry.models import PiiScan
    from registry.services import dataset_version_upload, pii_scan_run

    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=make_dataset(people), filename="t.jsonl", data=b'{"t": "a"}\n'
    )
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    request = approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    client, steward = Client(), _token(people["data_steward"])
    _window_with_room()  # the upload and scan above may have taken a while
    url = f"/api/v1/approvals/{request.pk}"
    assert client.post(f"{url}/approve", {"reason": "ok"}, "application/json", **steward).status_code == 200
    # Every decision counts, refused ones too (the request is closed now: 409).
    assert client.post(f"{url}/reject", {"reason": "no"}, "application/json", **steward).status_code == 409
    _assert_429(client.post(f"{url}/reject", {"reason": "no"}, "application/json", **steward), "throttled")
    entries_before = Entry.objects.count()
    _assert_429(client.post(f"{url}/approve", {"reason": "ok"}, "application/json", **steward), "throttled")
    assert Entry.objects.count() == entries_before  # refused before the service ran


def test_report_generation_and_reads_are_limited(people: dict[str, Any]) -> None:
    client, officer = Client(), _token(people["compliance_officer"])
    body = {"kind": "governance_audit", "project": "assistant", "period_start": str(dt.date(2026, 1, 1)),
            "period_end": str(dt.date(2026, 1, 31))}  # fmt: skip
    created = client.post("/api/v1/reports/", body, "application/json", **officer)
    assert created.status_code == 202, created.content
    _assert_429(client.post("/api/v1/reports/", body, "application/json", **officer), "throttled")
    run = created.json()["id"]
    assert client.get("/api/v1/reports/", **officer).status_code == 200
    assert client.get(f"/api/v1/reports/{run}", **officer).status_code == 200
    _assert_429(client.get(f"/api/v1/reports/{run}/pdf", **officer), "throttled")


def test_failed_tokens_lock_out_the_address_even_for_the_right_token(
    people: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    client, good = Client(), _token(people["auditor"])
    with caplog.at_level(logging.WARNING, logger="common.ratelimit"):
        for i in range(3):
            guess = f"Token gov_{i:012x}_guess"
            assert client.get("/api/v1/me", HTTP_AUTHORIZATION=guess, REMOTE_ADDR="198.51.100.9").status_code == 401
    locked = [r for r in caplog.records if r.getMessage() == "api token authentication locked out"]
    assert [(r.lockout, r.client_ip) for r in locked] == [("ip", "198.51.100.9")]  # type: ignore[attr-defined]
    _assert_429(client.get("/api/v1/me", REMOTE_ADDR="198.51.100.9", **good), "locked_out")
    assert client.get("/api/v1/me", REMOTE_ADDR="198.51.100.10", **good).status_code == 200


def test_failed_tokens_lock_out_one_wrong_token_from_every_address_not_its_prefix(
    people: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    client, good = Client(), _token(people["auditor"])
    prefix = good["HTTP_AUTHORIZATION"].split("_")[1]
    with caplog.at_level(logging.WARNING, logger="common.ratelimit"):
        for i in range(3):
            wrong = client.get(
                "/api/v1/me", HTTP_AUTHORIZATION=f"Token gov_{prefix}_wrong-secret", REMOTE_ADDR=f"203.0.113.{i}"
            )
            assert wrong.status_code == 401
    locked = [r for r in caplog.records if r.getMessage() == "api token authentication locked out"]
    assert [r.lockout for r in locked] == ["guess"] and locked[0].token_prefix == prefix  # type: ignore[attr-defined]
    assert "wrong-secret" not in caplog.text
    again = {"HTTP_AUTHORIZATION": f"Token gov_{prefix}_wrong-secret"}
    _assert_429(client.get("/api/v1/me", REMOTE_ADDR="203.0.113.50", **again), "locked_out")
    # The public prefix is not what is locked: the right token still works.
    assert client.get("/api/v1/me", REMOTE_ADDR="203.0.113.50", **good).status_code == 200


def test_turning_the_rate_limits_off_leaves_the_token_lockout_on(people: dict[str, Any], settings: Any) -> None:
    settings.API_RATE_LIMITS_ENABLED = False
    client, steward = Client(), _token(people["data_steward"])
    for _ in range(5):  # the list's limit is 3/m here
        assert client.get("/api/v1/approvals/", **steward).status_code == 200
    for i in range(3):
        guess = f"Token gov_{i:012x}_guess"
        assert client.get("/api/v1/me", HTTP_AUTHORIZATION=guess, REMOTE_ADDR="198.51.100.20").status_code == 401
    _assert_429(client.get("/api/v1/me", REMOTE_ADDR="198.51.100.20", **steward), "locked_out")
