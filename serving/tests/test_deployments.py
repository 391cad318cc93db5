"""Deployment requests, evidence, grants and promotion, in process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from audits.ledger.keys import load_signer_keys
from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from governance.services import approval_request_decide, approval_request_submit
from serving.grants import verify_grant
from serving.models import Deployment, DeploymentState
from serving.services import deployment_digest, deployment_promote, deployment_request

pytestmark = pytest.mark.django_db
TARGET = {"max_tokens": 16, "max_prompt_chars": 500}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS", "CREDIT_CARD"]}


def _request(ready: dict[str, Any], **overrides: Any) -> Deployment:
    arguments: dict[str, Any] = {
        "actor": ready["ml_engineer"], "model_version": ready["base"], "name": "assistant",
        "environment": "staging", "target": TARGET, "guard": GUARD,
    }  # fmt: skip
    arguments.update(overrides)
    return deployment_request(**arguments)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"environment": "prod"}, "environment"),
        ({"name": "Assistant Bot"}, "name"),
        ({"target": {"max_tokens": 0}}, "target.max_tokens"),
        ({"target": {"max_tokens": 10**6}}, "target.max_tokens"),
        ({"target": {"gpu_type": "z80", "gpu_count": 1}}, "target.gpu_type"),
        ({"target": {"warp_speed": 9}}, "warp_speed"),
        ({"guard": {"mode": "maybe"}}, "guard"),
        ({"guard": {"mode": "block", "entities": ["SOUL"]}}, "guard.entities"),
    ],
)
def test_bad_deployment_requests_are_refused_and_change_nothing(
    ready: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=field):
        _request(ready, **overrides)
    assert Deployment.objects.count() == 0 and Entry.objects.count() == before
    with pytest.raises(PermissionDenied):
        _request(ready, actor=ready["auditor"])


def test_approval_issues_a_grant_the_server_can_verify(ready: dict[str, Any], staging_policies: Any) -> None:
    from pathlib import Path

    from django.conf import settings

    deployment = _request(ready)
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    assert request.subject_digest == deployment_digest(deployment)
    assert [o["check"] for o in json.loads(bytes(Entry.objects.filter(action="approval.requested").last().body))[
        "payload"]["evidence"]] == ["training_data_approved"]  # fmt: skip
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.STARTING
    grant = deployment.grants.get()
    verifiers = [k.verifier() for k in load_signer_keys(Path(settings.LEDGER_SIGNING_KEY_FILE))]
    statement = verify_grant(grant.text, verifiers)
    assert statement["weights_digest"] == ready["base"].weights_digest
    assert statement["deployment"] == deployment.pk and statement["environment"] == "staging"
    assert Entry.objects.get(index=grant.ledger_index).action == "deployment.granted"


def test_a_promotion_without_the_evidence_is_refused_and_creates_nothing(
    ready: dict[str, Any], staging_policies: Any
) -> None:
    deployment = _request(ready)
    Deployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.LIVE)  # as the worker would report
    deployment.refresh_from_db()
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=r"security_scan_passed\(max_age_days=30, profile=baseline\)") as caught:
        deployment_promote(actor=ready["ml_engineer"], deployment=deployment)
    assert caught.value.status_code == 422
    assert Deployment.objects.count() == 1 and Entry.objects.count() == before


def test_compliance_officers_see_deployments_and_grants_in_the_admin(
    ready: dict[str, Any], staging_policies: Any, client: Any
) -> None:
    deployment = _request(ready)
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    client.force_login(ready["compliance_officer"])
    assert client.get("/admin/serving/deployment/").status_code == 200
    page = client.get(f"/admin/serving/deployment/{deployment.pk}/change/")
    assert page.status_code == 200 and str(deployment.grants.get().grant_id).encode() in page.content
    assert client.get("/admin/serving/deployment/add/").status_code == 403
