"""Waivers (``security_scan.waive``, ``bias_evaluation.waive``): only a finished run with a failing
verdict is waived; a run that errored is re-run, not waived; an action its subject type does not
admit is refused, naming it; a waiver names its scope (environment, deployment, use) and is
evidence only within it.

The errored scan is made by the real worker path with garak's call site replaced by one that
raises (as in test_failures_and_requeue.py); a finished verdict is set by an ORM update, as
test_evidence_and_rescans.py does, since a real garak run is not what is under test."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from audits.checks import garak_scan, services
from audits.checks.models import AuditState, SecurityScan, Verdict
from audits.ledger.models import Entry
from common.errors import Conflict
from governance.models import ApprovalRequest, ApprovalState
from governance.roles import Role
from governance.services import api_token_create, approval_request_decide, approval_request_submit, project_role_grant

pytestmark = pytest.mark.django_db


def _scan(r: dict[str, Any]) -> SecurityScan:
    scan = services.security_scan_request(actor=r["ml_engineer"], model_version=r["base"], profile_name="baseline")
    scan.refresh_from_db()
    return scan


def _errored_scan(r: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> SecurityScan:
    scan = _scan(r)

    def broken_garak(**_: Any) -> Any:
        raise RuntimeError("the model server closed the connection")

    monkeypatch.setattr(garak_scan, "run_scan", broken_garak)
    services.security_scan_execute(scan_id=scan.pk, idempotency_key=str(scan.idempotency_key), worker="w1")
    scan.refresh_from_db()
    assert scan.state == AuditState.FAILED and scan.verdict == Verdict.NONE
    return scan


def _reviewer(r: dict[str, Any], role: Role = Role.SECURITY_REVIEWER) -> Any:
    user, made = get_user_model().objects.get_or_create(username=role.value.replace("_", "-"))
    if made:
        project_role_grant(actor=r["system"], project=r["project"], user=user, role=role, reason="reviews")
    return user


def _api(user: Any) -> Client:
    token = api_token_create(actor=user, user=user, name="t")[1]
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


def _waive(r: dict[str, Any], scan: SecurityScan, **context: str) -> ApprovalRequest:
    return approval_request_submit(
        actor=r["ml_engineer"], subject_type="security_scan", subject_id=str(scan.pk), action="security_scan.waive",
        context=context, comment="known limitation of the tiny model",
    )  # fmt: skip


def test_a_scan_that_failed_to_run_is_not_waived_but_run_again(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = _errored_scan(ready, monkeypatch)
    api = _api(ready["ml_engineer"])
    before = Entry.objects.count()
    with pytest.raises(Conflict) as caught:
        _waive(ready, scan, environment="staging", use="internal pilot")
    assert caught.value.code == "not_now"
    assert caught.value.message == (
        f"security scan {scan.pk} failed to run (RuntimeError: the model server closed the connection): an error "
        "is not a verdict, so there is nothing to waive; run it again"
    )
    assert not ApprovalRequest.objects.filter(subject_type="security_scan").exists()
    assert Entry.objects.count() == before
    # Through the API: the same refusal, as a 409 naming why.
    answer = api.post(
        f"/api/v1/security-scans/{scan.pk}/submit",
        {"action": "security_scan.waive", "environment": "staging", "use": "internal pilot"},
        content_type="application/json",
    )  # fmt: skip
    assert answer.status_code == 409, answer.content
    error = answer.json()["error"]
    assert error["code"] == "not_now" and "an error is not a verdict" in error["message"]
    assert not ApprovalRequest.objects.filter(subject_type="security_scan").exists()
    assert Entry.objects.count() == before


def test_an_unfinished_or_passing_scan_is_not_waived(ready: dict[str, Any]) -> None:
    scan = _scan(ready)  # queued: no verdict yet
    with pytest.raises(Conflict, match="only a finished run with a failing verdict is waived"):
        _waive(ready, scan, environment="staging", use="internal pilot")
    SecurityScan.objects.filter(pk=scan.pk).update(state=AuditState.COMPLETED, verdict=Verdict.PASSED,
                                                    finished_at=timezone.now())  # fmt: skip
    with pytest.raises(Conflict, match="passed: there is nothing to waive"):
        _waive(ready, scan, environment="staging", use="internal pilot")
    SecurityScan.objects.filter(pk=scan.pk).update(verdict=Verdict.FAILED, reasons=["failure rate 0.6 > 0.5"])
    assert _waive(ready, scan, environment="staging", use="internal pilot").state == ApprovalState.PENDING


def test_a_waiver_opened_before_the_rule_is_not_approved_for_an_errored_run(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from audits.checks.evidence import audit_digest
    from governance.policy import current_policy_set

    scan = _errored_scan(ready, monkeypatch)
    # As a request opened before waivers were tied to a verdict would be: written directly.
    rule = current_policy_set().rule_for("security_scan.waive", {"project": ready["project"].slug})
    legacy = ApprovalRequest.objects.create(
        project=ready["project"], action="security_scan.waive", subject_type="security_scan", subject_id=str(scan.pk),
        subject_digest=audit_digest(scan), rule=rule.describe(), policy_hash=current_policy_set().hash,
        requester=ready["ml_engineer"],
    )  # fmt: skip
    with pytest.raises(Conflict, match="an error is not a verdict") as caught:
        approval_request_decide(actor=_reviewer(ready), request_id=legacy.pk, decision="approve", reason="fine")
    assert caught.value.code == "not_now"
    legacy.refresh_from_db()
    assert legacy.state == ApprovalState.PENDING and not legacy.decisions.exists()


def test_an_action_its_subject_type_does_not_admit_is_refused_naming_it(ready: dict[str, Any]) -> None:
    version = ready["version"]
    api = _api(ready["ml_engineer"])
    before = Entry.objects.count()
    answer = api.post(
        f"/api/v1/dataset-versions/{version.pk}/submit", {"action": "security_scan.waive"},
        content_type="application/json",
    )  # fmt: skip
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"] == (
        "action 'security_scan.waive' does not apply to a dataset_version; it admits: "
        "dataset_version.use_for_training, dataset_version.use_for_evaluation"
    )
    assert "security_scan.waive" in error["fields"]["action"][0]
    assert not ApprovalRequest.objects.filter(subject_type="dataset_version", action="security_scan.waive").exists()
    assert Entry.objects.count() == before
    scan = _scan(ready)
    SecurityScan.objects.filter(pk=scan.pk).update(state=AuditState.COMPLETED, verdict=Verdict.FAILED,
                                                    finished_at=timezone.now(), reasons=["x"])  # fmt: skip
    answer = api.post(
        f"/api/v1/security-scans/{scan.pk}/submit",
        {"action": "bias_evaluation.waive", "environment": "staging", "use": "internal pilot"},
        content_type="application/json",
    )  # fmt: skip
    assert answer.status_code == 400
    assert "'bias_evaluation.waive' does not apply to a security_scan" in answer.json()["error"]["message"]


# --- Scope -----------------------------------------------------------------------------------------

BASELINE = {"profile": "baseline", "max_age_days": 30}


def _failed_scan(r: dict[str, Any]) -> SecurityScan:
    scan = _scan(r)
    SecurityScan.objects.filter(pk=scan.pk).update(
        state=AuditState.COMPLETED, verdict=Verdict.FAILED, finished_at=timezone.now(), reasons=["failure rate 0.6"]
    )
    scan.refresh_from_db()
    return scan


def _approved_waiver(r: dict[str, Any], scan: SecurityScan, **context: str) -> ApprovalRequest:
    request = _waive(r, scan, **context)
    return approval_request_decide(actor=_reviewer(r), request_id=request.pk, decision="approve", reason="accepted")


def _deployment(r: dict[str, Any], environment: str, pk: int) -> Any:
    """A deployment of the scanned weights as the evidence check reads it (environment and id):
    serving's registered check is what is under test, not a deployment's life."""
    from serving.models import Deployment

    return Deployment(pk=pk, project=r["project"], model_version=r["base"], environment=environment)


def _scan_evidence(deployment: Any) -> dict[str, Any]:
    from governance.evidence import evaluate

    return evaluate(({"check": "security_scan_passed", **BASELINE},), "deployment", deployment)[0]


def test_a_waiver_for_staging_is_no_evidence_for_production(ready: dict[str, Any]) -> None:
    scan = _failed_scan(ready)
    waiver = _approved_waiver(
        ready, scan, environment="staging", use="accepted for internal staging pilot; retrain before customer launch"
    )
    assert waiver.state == ApprovalState.APPROVED
    production = _scan_evidence(_deployment(ready, "production", 8))
    assert not production["holds"]
    staging = _scan_evidence(_deployment(ready, "staging", 7))
    assert staging["holds"], staging
    assert "waived (staging, for accepted for internal staging pilot" in staging["detail"]
    assert waiver.context == {
        "environment": "staging", "use": "accepted for internal staging pilot; retrain before customer launch"
    }  # fmt: skip
    assert production["detail"].endswith(
        "its waiver is for staging, for accepted for internal staging pilot; retrain before customer launch, "
        "not for deployment 8 (production)"
    )
    # The model version alone (model_version.deploy) is bound to no environment: a staging waiver
    # is no evidence for it either.
    assert not services.security_scan_passed(ready["base"], **BASELINE)[0]


def test_a_waiver_for_one_deployment_or_for_any_environment(ready: dict[str, Any]) -> None:
    scan = _failed_scan(ready)
    _approved_waiver(ready, scan, environment="production", deployment="8", use="the launch, with a guard")
    assert _scan_evidence(_deployment(ready, "production", 8))["holds"]
    assert not _scan_evidence(_deployment(ready, "production", 9))["holds"]
    assert not services.security_scan_passed(ready["base"], **BASELINE)[0]
    other = _failed_scan(ready)  # the newer scan is the one judged now
    _approved_waiver(ready, other, environment="any", use="accepted everywhere until the retrain")
    assert _scan_evidence(_deployment(ready, "production", 9))["holds"]
    assert services.security_scan_passed(ready["base"], **BASELINE)[0]


def test_a_waiver_request_names_its_scope(ready: dict[str, Any]) -> None:
    scan = _failed_scan(ready)
    api = _api(ready["ml_engineer"])
    before = Entry.objects.count()
    for body, field, problem in (
        ({}, "environment", "required by the policy"),
        ({"environment": "staging"}, "use", "required by the policy"),
        ({"environment": "everywhere", "use": "x"}, "environment", "one of staging, production, any"),
        ({"environment": "production", "deployment": "the big one", "use": "x"}, "deployment", "does not match"),
    ):
        answer = api.post(
            f"/api/v1/security-scans/{scan.pk}/submit", {"action": "security_scan.waive", **body},
            content_type="application/json",
        )  # fmt: skip
        assert answer.status_code == 400, (body, answer.content)
        error = answer.json()["error"]
        assert error["code"] == "invalid_input" and problem in error["fields"][field][0], (body, error)
    assert not ApprovalRequest.objects.filter(subject_type="security_scan").exists()
    assert Entry.objects.count() == before
    answer = api.post(
        f"/api/v1/security-scans/{scan.pk}/submit",
        {"action": "security_scan.waive", "environment": "production", "deployment": "8", "use": "the launch"},
        content_type="application/json",
    )  # fmt: skip
    assert answer.status_code == 201, answer.content
    assert answer.json()["context"] == {"environment": "production", "deployment": "8", "use": "the launch"}
    requested = Entry.objects.filter(action="approval.requested", subject_type="security_scan").get()
    import json

    assert json.loads(bytes(requested.body))["payload"]["context"] == answer.json()["context"]


def test_a_waiver_that_names_no_scope_covers_nothing(ready: dict[str, Any]) -> None:
    from audits.checks.evidence import waiver_covers

    assert not waiver_covers({}, {"environment": "staging", "deployment": "1"})
    assert not waiver_covers({}, None)
    assert waiver_covers({"environment": "any"}, None)
    assert not waiver_covers({"environment": "any", "deployment": "1"}, None)


def test_the_admin_requests_a_waiver_with_its_scope_and_shows_refusals_on_the_form(
    ready: dict[str, Any], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.testing import admin_login

    admin_login(client, ready["ml_engineer"])
    errored, failed = _errored_scan(ready, monkeypatch), _failed_scan(ready)
    page = client.get(f"/admin/checks/securityscan/{failed.pk}/change/").content.decode()
    assert f"/admin/checks/securityscan/{failed.pk}/waive/" in page
    assert client.get(f"/admin/checks/securityscan/{failed.pk}/waive/").status_code == 200
    before = Entry.objects.count()
    no_use = client.post(f"/admin/checks/securityscan/{failed.pk}/waive/", {"environment": "staging"})
    assert no_use.status_code == 200 and "This field is required." in no_use.content.decode()
    refused = client.post(
        f"/admin/checks/securityscan/{errored.pk}/waive/", {"environment": "staging", "use": "internal pilot"}
    ).content.decode()
    assert "nothing was requested" in refused and "an error is not a verdict, so there is nothing to waive" in refused
    wrong = client.post(
        f"/admin/checks/securityscan/{failed.pk}/waive/",
        {"environment": "production", "deployment": "the big one", "use": "the launch"},
    ).content.decode()
    assert "does not match" in wrong
    assert not ApprovalRequest.objects.filter(subject_type="security_scan").exists()
    assert Entry.objects.count() == before
    done = client.post(
        f"/admin/checks/securityscan/{failed.pk}/waive/",
        {"environment": "staging", "use": "internal staging pilot", "comment": "tiny model"},
    )  # fmt: skip
    waiver = ApprovalRequest.objects.get(subject_type="security_scan")
    assert done.status_code == 302 and done["Location"] == f"/admin/governance/approvalrequest/{waiver.pk}/change/"
    assert waiver.action == "security_scan.waive"
    assert waiver.context == {"environment": "staging", "use": "internal staging pilot"}
