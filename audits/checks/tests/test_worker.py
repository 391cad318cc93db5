"""Scans and evaluations on the real Celery worker, through the API: a real garak run on the tiny
model whose findings match garak's own report, a real bias evaluation, and a deployment request
whose evidence checks block it, then allow it once the findings are dealt with."""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.checks.models import AuditState, BiasEvaluation, SecurityScan
from audits.checks.tests.conftest import MAPPING
from audits.ledger.models import Entry
from audits.ledger.verification import ledger_verify
from common import artifacts
from governance.roles import Role
from governance.services import api_token_create, project_role_grant

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _client(user: Any, system: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {api_token_create(actor=system, user=user, name='t')[1]}")


def _wait(model: type[Any], pk: int, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        audit = model.objects.get(pk=pk)
        if audit.state in (AuditState.COMPLETED, AuditState.FAILED):
            return audit
        assert time.monotonic() < deadline, f"{model.__name__} {pk} is still {audit.state} after {timeout} s"
        time.sleep(0.5)


def _deploy(client: Client, version_id: int) -> Any:
    return client.post(
        f"/api/v1/model-versions/{version_id}/submit", {"action": "model_version.deploy", "comment": "go live"},
        content_type="application/json",
    )  # fmt: skip


def test_scan_and_evaluation_gate_a_deployment(
    audited: dict[str, Any], celery_worker_process: subprocess.Popen[bytes]
) -> None:
    users = get_user_model().objects
    for name, role in (("security-reviewer", Role.SECURITY_REVIEWER), ("fairness-reviewer", Role.FAIRNESS_REVIEWER)):
        user = users.create_user(username=name)
        project_role_grant(actor=audited["system"], project=audited["project"], user=user, role=role, reason="setup")
    engineer = _client(audited["ml_engineer"], audited["system"])
    version = audited["base"]

    # No audit yet: the deployment's evidence does not hold.
    refused = _deploy(engineer, version.pk)
    assert refused.status_code == 422, refused.content
    assert "security_scan_passed(max_age_days=30, profile=baseline)" in refused.json()["error"]["message"]

    # A real garak run on the worker.
    response = engineer.post(
        f"/api/v1/model-versions/{version.pk}/security-scans/", {"profile": "baseline"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    scan = _wait(SecurityScan, response.json()["id"])
    assert scan.state == AuditState.COMPLETED, scan.failure_reason
    # The findings are garak's own counts: read its report here, independently of the service.
    expected: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for line in artifacts.open_blob(scan.report_digest).read_text().splitlines():
        record = json.loads(line)
        if record.get("entry_type") == "eval":
            expected[(record["probe"], record["detector"])] = {
                "passed": record["passed"], "fails": record["fails"], "nones": record["nones"],
                "total": record["total_evaluated"],
            }  # fmt: skip
    found = {
        (f["probe"], f["detector"]): {k: f[k] for k in ("passed", "fails", "nones", "total")} for f in scan.findings
    }
    assert found == dict(expected) and found
    assert {probe for probe, _ in found} == set(scan.profile["probes"])
    owasp = {f["probe"]: f["owasp"] for f in scan.findings}
    assert owasp == {"goodside.WhoIsRiley": ["LLM09:2025"], "promptinject.HijackHateHumans": ["LLM01:2025"]}
    assert scan.garak_version.startswith("0.17")
    detail = engineer.get(f"/api/v1/security-scans/{scan.pk}").json()
    assert detail["findings"] == scan.findings and detail["report_digest"] == scan.report_digest

    # The tiny model never says "I hate humans" nor claims facts about Riley Goodside.
    assert scan.verdict == "passed" and scan.reasons == []

    # Scanned, not yet evaluated for bias: still refused, now for the evaluation.
    refused = _deploy(engineer, version.pk)
    assert refused.status_code == 422 and "bias_within_bounds" in refused.json()["error"]["message"]

    response = engineer.post(
        f"/api/v1/model-versions/{version.pk}/bias-evaluations/",
        {"profile": "default", "dataset_version": audited["evaluation_version"].pk,
         "prompt_template": audited["template"].pk, "label_field": "label", "sensitive_feature": "group",
         "label_mapping": MAPPING},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    evaluation = _wait(BiasEvaluation, response.json()["id"])
    assert evaluation.verdict == "failed", evaluation.failure_reason
    assert evaluation.results["demographic_parity_difference"] == pytest.approx(0.5)
    chart = engineer.get(f"/api/v1/bias-evaluations/{evaluation.pk}/chart")
    assert chart.status_code == 200 and chart["Content-Type"] == "image/png"
    refused = _deploy(engineer, version.pk)
    assert refused.status_code == 422
    assert "failed: demographic_parity_difference 0.500 is above the bound 0.100" in refused.json()["error"]["message"]

    # A fairness reviewer waives this report's findings, with a justification: now it is allowed.
    _waive(audited, "bias_evaluation", evaluation.pk, "fairness-reviewer")
    allowed = _deploy(engineer, version.pk)
    assert allowed.status_code == 201, allowed.content
    evidence = [e for e in Entry.objects.filter(action="approval.requested", subject_type="model_version")]
    payload = json.loads(bytes(evidence[-1].body))["payload"]
    # The scan (passed), the evaluation (waived) and the quantisation bound (not a quantised version).
    assert [o["holds"] for o in payload["evidence"]] == [True, True, True]
    assert ledger_verify().tree_size == Entry.objects.count()


def _waive(audited: dict[str, Any], kind: str, pk: int, reviewer: str) -> None:
    engineer = _client(audited["ml_engineer"], audited["system"])
    request = engineer.post(
        f"/api/v1/{kind.replace('_', '-')}s/{pk}/submit",
        {"action": f"{kind}.waive", "comment": "known limitation", "environment": "any", "use": "the internal pilot"},
        content_type="application/json",
    )  # fmt: skip
    assert request.status_code == 201, request.content
    user = get_user_model().objects.get(username=reviewer)
    decided = _client(user, audited["system"]).post(
        f"/api/v1/approvals/{request.json()['id']}/approve",
        {"reason": "accepted for the internal pilot: the tiny model is not user-facing"},
        content_type="application/json",
    )  # fmt: skip
    assert decided.status_code == 200 and decided.json()["state"] == "approved", decided.content
