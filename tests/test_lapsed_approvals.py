"""Lapsed is final (issue 26, classes 6 and 15): an approval whose subject no longer matches it
lapses the first time any check sees the mismatch, with its reason and a ledger entry, and never
counts again, even when the subject returns to the approved digest (a review flipped back); the
decision page and the API say why. An erased dataset version's approvals lapse with the erasure."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from common.errors import Conflict
from common.testing import admin_login
from governance.models import ApprovalRequest, ApprovalState
from governance.services import api_token_create, approval_holds, approval_request_decide
from registry.models import DatasetVersion
from registry.services import dataset_version_digest, dataset_version_review
from tests.test_approvals import ACTION, _entries, _submit, _version

pytestmark = pytest.mark.django_db

PERSONAL = b'{"text": "write to ada@example.org"}\n{"text": "no personal data here"}\n'


def _approved(people: dict[str, Any]) -> tuple[DatasetVersion, ApprovalRequest]:
    """A version holding reviewed personal data, approved for training by both slots."""
    version = _version(people, PERSONAL)
    version = dataset_version_review(actor=people["data_steward"], version=version, decision="confirmed", note="ok")
    request = _submit(people, version)
    for who in ("data_steward", "compliance_officer"):
        request = approval_request_decide(actor=people[who], request_id=request.pk, decision="approve", reason="ok")
    assert request.state == ApprovalState.APPROVED
    return version, request


def _holds(version: DatasetVersion) -> bool:
    version.refresh_from_db()
    return approval_holds(
        subject_type="dataset_version",
        subject_id=str(version.pk),
        action=ACTION,
        digest=dataset_version_digest(version),
    )


def _review(people: dict[str, Any], version: DatasetVersion, decision: str) -> None:
    dataset_version_review(actor=people["data_steward"], version=version, decision=decision, note="changed my mind")


def test_an_approval_that_lapsed_stays_lapsed_when_the_review_flips_back(people: dict[str, Any]) -> None:
    version, request = _approved(people)
    approved_digest = request.subject_digest
    assert _holds(version)
    _review(people, version, "anonymisation_required")
    assert not _holds(version)  # the check that sees the mismatch records the lapse
    request.refresh_from_db()
    version.refresh_from_db()
    changed_digest = dataset_version_digest(version)
    assert request.state == ApprovalState.LAPSED and request.lapsed_at is not None
    assert request.lapse_reason == f"the dataset version changed after the approval: its digest is now {changed_digest}"
    [lapsed] = _entries(action="approval.lapsed")
    assert lapsed["payload"] == {
        "request": request.pk, "action": ACTION, "approved_digest": approved_digest, "current_digest": changed_digest,
        "reason": request.lapse_reason,
    }  # fmt: skip
    assert lapsed["actor"]["name"] == "system"

    _review(people, version, "confirmed")  # back to the approved digest
    version.refresh_from_db()
    assert dataset_version_digest(version) == approved_digest
    assert not _holds(version)
    request.refresh_from_db()
    assert request.state == ApprovalState.LAPSED and len(_entries(action="approval.lapsed")) == 1


def test_a_lapse_seen_inside_a_refused_transaction_is_kept(people: dict[str, Any]) -> None:
    from governance.services.approvals import lapses_kept

    version, request = _approved(people)
    _review(people, version, "anonymisation_required")
    with pytest.raises(Conflict), lapses_kept(), transaction.atomic():
        assert not _holds(version)  # a service's check sees the mismatch...
        raise Conflict("refused", "...and the service refuses: its transaction rolls back")
    request.refresh_from_db()
    assert request.state == ApprovalState.LAPSED
    assert [e["payload"]["request"] for e in _entries(action="approval.lapsed")] == [request.pk]
    _review(people, version, "confirmed")
    assert not _holds(version)


def test_the_decision_page_and_the_api_say_why_an_approval_lapsed(people: dict[str, Any], client: Any) -> None:
    version, request = _approved(people)
    _review(people, version, "anonymisation_required")
    _review(people, version, "confirmed")  # flipped back before any check saw the change...
    # ...so the approval still counts until a check sees it; the page is such a check when the subject
    # no longer matches. Here it matches again: the page keeps it approved.
    admin_login(client, people["compliance_officer"])
    page = client.get(f"/admin/governance/approvalrequest/{request.pk}/change/")
    assert page.status_code == 200 and 'id="lapse-reason"' not in page.content.decode()
    _review(people, version, "anonymisation_required")
    page = client.get(f"/admin/governance/approvalrequest/{request.pk}/change/").content.decode()
    assert "Lapsed" in page and 'id="lapse-reason"' in page
    assert "the dataset version changed after the approval: its digest is now" in page
    assert "lapsed for good: the dataset version changed after the approval" in page  # the history line
    token = api_token_create(actor=people["data_steward"], user=people["data_steward"], name="t")[1]
    answer = client.get(f"/api/v1/approvals/{request.pk}", HTTP_AUTHORIZATION=f"Token {token}").json()
    assert answer["state"] == "lapsed" and answer["lapse_reason"].startswith("the dataset version changed")
    assert answer["lapsed_at"] is not None


def test_the_api_is_a_check_that_lapses_an_approval_whose_subject_changed(people: dict[str, Any], client: Any) -> None:
    version, request = _approved(people)
    token = api_token_create(actor=people["data_steward"], user=people["data_steward"], name="t")[1]
    _review(people, version, "anonymisation_required")
    answer = client.get(f"/api/v1/approvals/{request.pk}", HTTP_AUTHORIZATION=f"Token {token}").json()
    assert answer["state"] == "lapsed" and "changed after the approval" in answer["lapse_reason"]
    _review(people, version, "confirmed")
    assert not _holds(version)


def test_an_erased_versions_approvals_lapse_and_its_pending_requests_are_withdrawn(people: dict[str, Any]) -> None:
    from registry.services import dataset_version_erase_records

    version, training = _approved(people)
    evaluation = _submit_evaluation(people, version)
    assert _holds(version)
    dataset_version_erase_records(
        actor=people["compliance_officer"], version=version, record_numbers={1}, reason="GDPR Art. 17 request 12"
    )
    assert not _holds(version)
    training.refresh_from_db()
    evaluation.refresh_from_db()
    assert training.state == ApprovalState.LAPSED
    assert training.lapse_reason == "the dataset version was erased: GDPR Art. 17 request 12"
    assert evaluation.state == ApprovalState.WITHDRAWN
    [lapsed] = _entries(action="approval.lapsed")
    assert lapsed["payload"]["request"] == training.pk and lapsed["payload"]["current_digest"] is None


def _submit_evaluation(people: dict[str, Any], version: DatasetVersion) -> ApprovalRequest:
    from governance.services import approval_request_submit

    return approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_evaluation",
    )  # fmt: skip


def test_a_policy_for_an_action_no_subject_type_admits_is_refused_at_load(tmp_path: Any) -> None:
    import shutil

    from django.conf import settings

    from governance.evidence import known_checks
    from governance.policy import PolicyError, load_policy_set
    from governance.subjects import subject_actions

    shutil.copytree(settings.POLICY_DIR, tmp_path / "policies")
    assert load_policy_set(tmp_path / "policies", known_checks(), set(subject_actions())).policies
    (tmp_path / "policies" / "dataset_version.waive.yaml").write_text(
        "action: dataset_version.waive\nrules:\n  - approvals:\n      - {role: security_reviewer, count: 1}\n"
    )
    with pytest.raises(PolicyError, match=r"dataset_version.waive.yaml, line 1, field action: no governed subject "
                       r"type admits 'dataset_version.waive'; admitted: ai_system_classification.approve, bias_evaluation.run, "):  # fmt: skip
        load_policy_set(tmp_path / "policies", known_checks(), set(subject_actions()))
