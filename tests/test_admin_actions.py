"""The approval inbox's actions say the true outcome: an approval that fills one slot of several
leaves the request pending and says so; a selection with nothing pending says nothing was decided.
(The other admin actions are tested with their apps; the helper itself in common/tests.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApprovalRequest, ApprovalState
from governance.services import approval_request_submit
from registry.models import DatasetVersion, PiiScan
from registry.services import dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset

PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
INBOX = "/admin/governance/approvalrequest/"


def _request(people: dict[str, Any], **context: str) -> ApprovalRequest:
    dataset = make_dataset(people, slug=f"d{DatasetVersion.objects.count()}")
    data = b'{"text": "no personal data here"}\n'
    version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    return approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training", context=context, comment="for the tone fine-tune",
    )  # fmt: skip


def _decide(client: Any, action: str, *requests: ApprovalRequest, reason: str = "") -> list[str]:
    response = client.post(
        INBOX, {"action": action, "_selected_action": [r.pk for r in requests], "reason": reason}, follow=True
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def _state(request: ApprovalRequest) -> str:
    return ApprovalRequest.objects.get(pk=request.pk).state


@pytest.mark.django_db
def test_the_inbox_says_which_requests_were_approved_and_which_still_wait(client: Any, people: dict[str, Any]) -> None:
    one_slot, two_slots = _request(people), _request(people, risk_tier="high")
    admin_login(client, people["data_steward"])
    start = Entry.objects.count()
    assert _decide(client, "approve_selected", one_slot, two_slots, reason="clean data") == [
        f"#{two_slots.pk}: Your approval is recorded; the compliance officer's slot is still open.",
        "Approved 1 request(s).",
    ]
    assert (_state(one_slot), _state(two_slots)) == (ApprovalState.APPROVED, ApprovalState.PENDING)
    written = [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=start).order_by("index")]
    decisions = sorted((e["payload"]["request"], e["action"], e["payload"]["reason"]) for e in written)
    assert decisions == [
        (one_slot.pk, "approval.approved", "clean data"),
        (two_slots.pk, "approval.slot_filled", "clean data"),
    ]
    # Nothing selected is pending any more for the steward's eyes: said so, and nothing is written.
    start = Entry.objects.count()
    assert _decide(client, "reject_selected", one_slot) == [
        "No request decided: none of the selected requests is pending."
    ]
    assert Entry.objects.count() == start
    admin_login(client, people["compliance_officer"])
    assert _decide(client, "approve_selected", two_slots) == ["Approved 1 request(s)."]
    assert _state(two_slots) == ApprovalState.APPROVED
    rejected = _request(people)
    assert _decide(client, "reject_selected", rejected) == [
        f"#{rejected.pk}: deciding needs one of the roles data_steward"
    ]  # the officer holds no slot of the low-risk rule
    admin_login(client, people["data_steward"])
    assert _decide(client, "reject_selected", rejected) == ["Rejected 1 request(s)."]
    assert _state(rejected) == ApprovalState.REJECTED
