"""Cancelling a scan or an evaluation that has not started: one waiting for approval (its pending
approval request is withdrawn with it) or one queued (a late delivery then runs nothing). A running
or finished one is refused and stays as it is; only ML engineers and the kind's reviewers cancel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from audits.checks import services
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan
from audits.checks.tests.conftest import MAPPING
from audits.ledger.models import Entry
from common.errors import Conflict, PermissionDenied
from governance.models import ApprovalRequest, ApprovalState
from governance.services import api_token_create, approval_request_submit

pytestmark = pytest.mark.django_db


def _scan(r: dict[str, Any]) -> SecurityScan:
    return services.security_scan_request(actor=r["ml_engineer"], model_version=r["base"], profile_name="smoke")


def _actions(kind: str, pk: int) -> list[str]:
    return list(
        Entry.objects.filter(subject_type=kind, subject_id=str(pk)).order_by("index").values_list("action", flat=True)
    )


def test_a_scan_waiting_for_approval_is_cancelled_with_its_pending_request(
    ready: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    (policies / "security_scan.run.yaml").write_text(
        "action: security_scan.run\nrules:\n  - approvals:\n      - {role: security_reviewer, count: 1}\n"
    )
    settings.POLICY_DIR = policies
    scan = _scan(ready)
    assert scan.state == AuditState.REQUESTED
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="security_scan", subject_id=str(scan.pk), action="security_scan.run"
    )
    token = api_token_create(actor=ready["system"], user=ready["ml_engineer"], name="t")[1]
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post(
        f"/api/v1/security-scans/{scan.pk}/cancel", {"reason": "wrong profile"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["state"] == AuditState.CANCELLED
    request.refresh_from_db()
    assert request.state == ApprovalState.WITHDRAWN
    assert _actions("security_scan", scan.pk)[-2:] == ["security_scan.cancelled", "approval.withdrawn"]
    withdrawn = json.loads(bytes(Entry.objects.filter(action="approval.withdrawn").order_by("-index")[0].body))
    who = ready["ml_engineer"].get_username()
    assert withdrawn["actor"]["name"] == "system"
    assert withdrawn["payload"]["reason"] == f"security_scan {scan.pk} cancelled by {who}: wrong profile"
    # Cancelled is final: a second cancel answers 409 and records nothing.
    entries = Entry.objects.count()
    again = client.post(
        f"/api/v1/security-scans/{scan.pk}/cancel", {"reason": "again"}, content_type="application/json"
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    assert Entry.objects.count() == entries


def test_a_queued_evaluation_is_cancelled_and_a_late_delivery_runs_nothing(audited: dict[str, Any]) -> None:
    evaluation = services.bias_evaluation_request(
        actor=audited["ml_engineer"], model_version=audited["base"], dataset_version=audited["evaluation_version"],
        prompt_template=audited["template"], label_field="label", sensitive_feature="group", label_mapping=MAPPING,
        profile_name="default",
    )  # fmt: skip
    assert evaluation.state == AuditState.QUEUED
    key = str(evaluation.idempotency_key)
    cancelled = services.audit_cancel(actor=audited["ml_engineer"], audit=evaluation, reason="wrong data")
    assert cancelled.state == AuditState.CANCELLED and cancelled.finished_at is not None
    assert services.bias_evaluation_execute(evaluation_id=evaluation.pk, idempotency_key=key, worker="test") is None
    assert BiasEvaluation.objects.get(pk=evaluation.pk).state == AuditState.CANCELLED
    assert "bias_evaluation.started" not in _actions("bias_evaluation", evaluation.pk)


@pytest.mark.parametrize("state", [AuditState.RUNNING, AuditState.COMPLETED, AuditState.FAILED])
def test_a_started_or_finished_scan_is_not_cancelled(ready: dict[str, Any], state: str) -> None:
    scan = _scan(ready)
    SecurityScan.objects.filter(pk=scan.pk).update(state=state)  # as a worker leaves it
    entries = Entry.objects.count()
    with pytest.raises(Conflict, match=f"is {state}: only a requested or queued one"):
        services.audit_cancel(actor=ready["ml_engineer"], audit=scan, reason="too late")
    assert SecurityScan.objects.get(pk=scan.pk).state == state and Entry.objects.count() == entries


def test_a_role_that_may_not_request_a_scan_may_not_cancel_it(ready: dict[str, Any]) -> None:
    scan = _scan(ready)
    with pytest.raises(PermissionDenied):
        services.audit_cancel(actor=ready["auditor"], audit=scan, reason="no")
    assert SecurityScan.objects.get(pk=scan.pk).state == AuditState.QUEUED
    assert not ApprovalRequest.objects.filter(subject_type="security_scan", subject_id=str(scan.pk)).exists()


def test_the_admin_cancels_through_the_same_service_and_shows_a_refusal(ready: dict[str, Any], client: Client) -> None:
    from django.contrib.auth import get_user_model

    from common.testing import admin_login
    from governance.roles import Role
    from governance.services import project_role_grant

    queued, done = _scan(ready), _scan(ready)
    SecurityScan.objects.filter(pk=done.pk).update(state=AuditState.COMPLETED)
    reviewer = get_user_model().objects.create_user(username="security-reviewer")
    project_role_grant(
        actor=ready["system"], project=ready["project"], user=reviewer, role=Role.SECURITY_REVIEWER, reason="setup"
    )
    admin_login(client, reviewer)  # the reviewers work in the admin (ML engineers are not staff)
    response = client.post(
        "/admin/checks/securityscan/", {"action": "cancel", "_selected_action": [queued.pk, done.pk]}, follow=True
    )
    assert response.status_code == 200
    assert SecurityScan.objects.get(pk=queued.pk).state == AuditState.CANCELLED
    assert SecurityScan.objects.get(pk=done.pk).state == AuditState.COMPLETED
    shown = response.content.decode().lower()  # the admin capitalises a message's first letter
    assert f"security_scan {done.pk}: security_scan {done.pk} is completed: only a requested" in shown
    assert _actions("security_scan", queued.pk)[-1] == "security_scan.cancelled"
    assert "security_scan.cancelled" not in _actions("security_scan", done.pk)
