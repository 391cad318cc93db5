"""CCPA opt-outs of sale or sharing and requests to limit the use of sensitive personal information:
completed without identity verification (Cal. Code Regs. tit. 11, §7026(d), §7027(e)), within 15
business days (§7026(f), §7027(g)), through the services, the API and the admin page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.ledger.models import Entry
from audits.privacy import deadlines as dl
from audits.privacy.admin import display
from audits.privacy.models import KINDS_BY_REGIME, DataSubjectRequest, Regime, RequestState
from audits.privacy.services import dsr_complete, dsr_receive, dsr_search, dsr_verify_identity
from common.errors import Conflict, DomainError, PermissionDenied
from common.testing import admin_login

pytestmark = pytest.mark.django_db
ANA = "ana.silva@example.org"


def _actions(request: DataSubjectRequest) -> list[str]:
    entries = Entry.objects.filter(subject_type="data_subject_request", subject_id=str(request.pk))
    return list(entries.order_by("index").values_list("action", flat=True))


def _payload(request: DataSubjectRequest, action: str) -> Any:
    entry = Entry.objects.filter(subject_type="data_subject_request", subject_id=str(request.pk), action=action).get()
    return json.loads(bytes(entry.body))["payload"]


def _receive(people: dict[str, Any], kind: str, regime: str = "ccpa") -> DataSubjectRequest:
    return dsr_receive(
        actor=people["compliance_officer"], project=people["project"], regime=regime, kind=kind,
        channel="web_form", received_at=timezone.now(), identifiers=[{"kind": "email", "value": ANA}],
        tz="America/Los_Angeles",
    )  # fmt: skip


def test_every_ccpa_kind_has_its_statutory_deadlines() -> None:
    assert set(KINDS_BY_REGIME[Regime.CCPA]) == set(dl.CCPA_KINDS)


@pytest.mark.parametrize("kind", ["opt_out", "limit_sensitive"])
def test_completed_straight_from_received_within_15_business_days(people: dict[str, Any], kind: str) -> None:
    officer = people["compliance_officer"]
    request = _receive(people, kind)
    expected = dl.ccpa_deadlines(request.received_at, kind=kind, tz="America/Los_Angeles")
    assert request.respond_by == expected.respond_by.ends_at
    assert dl.add_business_days(expected.received_on, 15, expected.holidays) == expected.respond_by.day
    assert request.confirm_by is None and request.extension_notice_by is None
    # The page never asks for a verification: it offers the search (optional) and completion.
    now = timezone.now()
    assert "verify-identity" not in display.steps(request, now)
    assert {"search", "complete"} <= set(display.steps(request, now))
    assert "no identity verification" in display.state_text(request)

    done = dsr_complete(actor=officer, request=request, nature="stopped selling and sharing; partners told")
    assert done.state == RequestState.COMPLETED and done.verified_at is None
    assert _actions(done) == ["data_subject_request.received", "data_subject_request.completed"]
    closing = _payload(done, "data_subject_request.completed")
    assert closing["identity_verified"] is False and closing["on_time"] is True
    assert closing["nature"] == "stopped selling and sharing; partners told"
    with pytest.raises(Conflict, match="is completed"):
        dsr_complete(actor=officer, request=done, nature="again")


def test_an_opt_out_may_be_searched_unverified_and_a_verification_recorded_anyway(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    searched = dsr_search(actor=officer, request=_receive(people, "opt_out"))
    assert searched.state == RequestState.SEARCHED and searched.findings["found"] is False
    assert "complete" in display.steps(searched, timezone.now())
    # A business that chose to verify may still record it; the flow goes on as before.
    verified = dsr_verify_identity(actor=officer, request=_receive(people, "limit_sensitive"), method="signed in")
    done = dsr_complete(actor=officer, request=verified, nature="limited to the permitted purposes")
    assert _payload(done, "data_subject_request.completed")["identity_verified"] is True


def test_other_kinds_still_need_the_verification(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    know = _receive(people, "know")
    assert display.steps(know, timezone.now())[:2] == ["confirm-receipt", "verify-identity"]
    with pytest.raises(Conflict, match="the search needs it identity_verified or searched"):
        dsr_search(actor=officer, request=know)
    with pytest.raises(Conflict, match="completion needs it searched or erased"):
        dsr_complete(actor=officer, request=know, nature="done")
    with pytest.raises(DomainError, match="a gdpr request is one of"):
        _receive(people, "limit_sensitive", regime="gdpr")
    with pytest.raises(PermissionDenied):
        dsr_complete(actor=people["auditor"], request=_receive(people, "opt_out"), nature="done")


def test_the_api_and_the_admin_complete_a_limit_request_without_verification(people: dict[str, Any]) -> None:
    from governance.services import api_token_create

    api = Client()
    token = api_token_create(actor=people["compliance_officer"], user=people["compliance_officer"], name="t")[1]
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    body = {
        "regime": "ccpa", "kind": "limit_sensitive", "channel": "web_form",
        "received_at": "2026-05-13T12:00:00Z", "identifiers": [{"kind": "email", "value": ANA}],
    }  # fmt: skip
    created = api.post("/api/v1/privacy/projects/assistant/requests/", body, content_type="application/json", **auth)
    assert created.status_code == 201, created.content
    assert created.json()["respond_by"].startswith("2026-06-04")  # Memorial Day skipped: 15 business days
    assert created.json()["confirm_by"] is None
    pk = created.json()["id"]
    completed = api.post(f"/api/v1/privacy/requests/{pk}/complete", {"nature": "limited"},
                         content_type="application/json", **auth)  # fmt: skip
    assert completed.status_code == 200, completed.content
    assert completed.json()["state"] == "completed" and completed.json()["verified_at"] is None

    browser = Client()
    admin_login(browser, people["compliance_officer"])
    opt_out = _receive(people, "opt_out")
    page = browser.get(f"/admin/privacy/datasubjectrequest/{opt_out.pk}/change/").content.decode()
    assert 'id="step-complete"' in page and 'id="step-search"' in page
    assert 'id="step-verify-identity"' not in page
    assert "no identity verification" in page
    done = browser.post(
        f"/admin/privacy/datasubjectrequest/{opt_out.pk}/step/complete/", {"nature": "opted out"}, follow=True
    )
    assert done.status_code == 200
    opt_out.refresh_from_db()
    assert opt_out.state == RequestState.COMPLETED and opt_out.response_nature == "opted out"
    assert _actions(opt_out) == ["data_subject_request.received", "data_subject_request.completed"]
