"""The decision page of an approval request and the inbox around it, through Django's test client
with the whole admin sign-in: what the page shows a decider, the true outcome of each decision,
refusals shown on the page with nothing changed, and the inbox's "waiting for me"."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState
from governance.services import approval_request_decide
from tests.decisions import training_request

pytestmark = pytest.mark.django_db

INBOX = "/admin/governance/approvalrequest/"


def _page(request: ApprovalRequest) -> str:
    return f"{INBOX}{request.pk}/change/"


def _text(response: Any) -> str:
    """The page's text without tags and with spaces collapsed, as a reader sees it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())).replace(" ;", ";")


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _state(request: ApprovalRequest) -> str:
    return ApprovalRequest.objects.get(pk=request.pk).state


def _entries_since(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=start).order_by("index")]


def test_the_page_shows_what_a_decider_needs(client: Any, people: dict[str, Any]) -> None:
    request = training_request(people, risk_tier="high")
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="clean")
    filled = ApprovalDecision.objects.get(request=request)
    admin_login(client, people["compliance_officer"])
    response = client.get(_page(request))
    assert response.status_code == 200
    page, text = response.content.decode(), _text(response)
    assert request.subject_digest in page and "the subject is unchanged" in text
    assert (
        "2 approvals: a data steward and a compliance officer; evidence: personal data reviewed; expires after 90 days"
        in text
    )
    assert "(chosen for risk tier high)" in text
    # The slots: the steward's filled (by whom, why, its ledger entry), the officer's open.
    assert f'href="/admin/ledger/entry/{filled.ledger_index}/change/"' in page
    assert re.search(r"data steward data-steward \S+ \S+ clean #\d+", text)
    assert "open for compliance officer" in text
    # The evidence as it stands now, with its reason; the dataset version's personal-data summary.
    assert "personal data reviewed holds no personal data found" in text
    assert "PII scan succeeded" in text and "personal data found none" in text
    assert "usable yes: no personal data found" in text
    version_link = f'href="/admin/registry/datasetversion/{request.subject_id}/change/"'
    assert version_link in page
    # The history, each step with its ledger entry; the form, since the officer may decide now.
    assert "submitted; comment: for the tone fine-tune" in text
    assert "approved as data steward: clean; the request stays pending" in text
    assert "You may decide this request now: you would fill the compliance officer slot." in text
    assert 'id="approve-button"' in page and 'id="reject-button"' in page


def test_only_a_person_who_may_decide_sees_the_form(client: Any, people: dict[str, Any]) -> None:
    request = training_request(people, risk_tier="high")
    for role, why in (
        ("auditor", "deciding needs the role of data steward or compliance officer in project assistant"),
        ("data_steward", None),
    ):
        admin_login(client, people[role])
        page = client.get(_page(request)).content.decode()
        assert ('id="decision-form"' in page) is (why is None)
        if why:
            assert f"You cannot decide this request now: {why}." in page
    outsider = get_user_model().objects.create_user(username="outsider", is_staff=True)
    admin_login(client, outsider)
    assert client.get(_page(request)).status_code == 404
    admin_login(client, people["data_steward"])
    assert client.get(f"{INBOX}999999/change/").status_code == 404
    assert client.get(f"{INBOX}abc/change/").status_code == 404


def test_each_decision_says_its_true_outcome(client: Any, people: dict[str, Any]) -> None:
    request = training_request(people, risk_tier="high")
    admin_login(client, people["data_steward"])
    start = Entry.objects.count()
    response = client.post(_page(request), {"decision": "approve", "reason": "no personal data"}, follow=True)
    assert response.redirect_chain == [(_page(request), 302)]
    assert _messages(response) == ["Your approval is recorded; the compliance officer's slot is still open."]
    assert _state(request) == ApprovalState.PENDING
    assert [(e["action"], e["payload"]["reason"]) for e in _entries_since(start)] == [
        ("approval.slot_filled", "no personal data")
    ]
    admin_login(client, people["compliance_officer"])
    response = client.post(_page(request), {"decision": "approve", "reason": "purpose matches"}, follow=True)
    assert _messages(response) == ["Approved: every slot is filled."]
    assert _state(request) == ApprovalState.APPROVED
    decision = ApprovalDecision.objects.get(request=request, approver=people["compliance_officer"])
    assert Entry.objects.get(index=decision.ledger_index).action == "approval.approved"
    assert "You cannot decide this request now: the request is approved." in _text(response)
    rejected = training_request(people)
    admin_login(client, people["data_steward"])
    response = client.post(_page(rejected), {"decision": "reject", "reason": "wrong purpose"}, follow=True)
    assert _messages(response) == ["Rejected: the request is closed."]
    assert _state(rejected) == ApprovalState.REJECTED


@pytest.mark.parametrize(
    ("who", "setup", "form", "message"),
    [
        ("auditor", None, {"decision": "approve", "reason": "ok"},
         "deciding needs one of the roles data_steward, compliance_officer"),
        ("data_steward", "steward_approved", {"decision": "approve", "reason": "again"},
         "separation of duties: one person fills one slot"),
        ("compliance_officer", "rejected", {"decision": "approve", "reason": "late"}, "is rejected"),
        ("data_steward", None, {"decision": "approve", "reason": "   "}, "a decision needs a reason"),
        ("data_steward", None, {"decision": "maybe", "reason": "ok"}, "decision is approve or reject"),
    ],
)  # fmt: skip
def test_a_refusal_is_shown_on_the_page_and_changes_nothing(
    client: Any, people: dict[str, Any], who: str, setup: str | None, form: dict[str, str], message: str
) -> None:
    request = training_request(people, risk_tier="high")
    if setup == "steward_approved":
        approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    if setup == "rejected":
        approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="reject", reason="no")
    state, decisions = _state(request), ApprovalDecision.objects.count()
    start = Entry.objects.count()
    admin_login(client, people[who])
    response = client.post(_page(request), form)
    assert response.status_code == 200
    [shown] = _messages(response)
    assert shown.startswith("Nothing was decided: ") and message in shown
    assert 'class="messagelist"' in response.content.decode()
    assert (_state(request), ApprovalDecision.objects.count()) == (state, decisions)
    # Nothing written, except the refusal the ledger keeps under separation of duties.
    written = [e["action"] for e in _entries_since(start)]
    assert written == (["separation_of_duties.refused"] if "separation of duties" in message else [])
    if "reason" in message:
        assert "may not be blank" in response.content.decode()  # next to the reason field


def test_the_inbox_shows_what_waits_for_me_first_and_everything_on_request(client: Any, people: dict[str, Any]) -> None:
    mine = training_request(people, risk_tier="high")
    not_mine = training_request(people)  # a data steward's alone
    admin_login(client, people["compliance_officer"])
    waiting = client.get(INBOX).content.decode()
    assert _page(mine) in waiting and _page(not_mine) not in waiting
    assert "Waiting for me" in waiting
    everything = client.get(INBOX, {"waiting": "all"}).content.decode()
    assert _page(mine) in everything and _page(not_mine) in everything
    # The column says which rows wait for the officer.
    assert everything.count('alt="True"') == 1 and everything.count('alt="False"') == 1


def test_the_inbox_action_names_the_slot_still_open(client: Any, people: dict[str, Any]) -> None:
    two_slots, one_slot = training_request(people, risk_tier="high"), training_request(people)
    admin_login(client, people["data_steward"])
    response = client.post(
        INBOX, {"action": "approve_selected", "_selected_action": [two_slots.pk, one_slot.pk], "reason": "clean"},
        follow=True,
    )  # fmt: skip
    assert _messages(response) == [
        f"#{two_slots.pk}: Your approval is recorded; the compliance officer's slot is still open.",
        "Approved 1 request(s).",
    ]
    assert (_state(two_slots), _state(one_slot)) == (ApprovalState.PENDING, ApprovalState.APPROVED)
