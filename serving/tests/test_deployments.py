"""Deployment requests, evidence, grants and promotion, in process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from audits.ledger.keys import load_signer_keys
from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from common.testing import admin_login
from governance.services import approval_request_decide, approval_request_submit
from serving.grants import verify_grant
from serving.models import Deployment, DeploymentState
from serving.selectors import inference_log_path
from serving.services import deployment_digest, deployment_promote, deployment_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_serving_root(settings: Any, tmp_path: Any) -> None:
    """These tests run in-process (no worker): their deployment folders and logs stay in the test's
    own folder, so a later test whose deployment gets the same id (ids restart after a flush)
    finds none of them."""
    settings.SERVING_ROOT = tmp_path / "serving"
    settings.SERVING_ROOT.mkdir()


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
    log = inference_log_path(deployment)  # two hours of a server's log: the page charts them
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        "".join(
            json.dumps({"time": f"2026-03-01T{hour:02d}:{minute:02d}:00.000Z", "request_id": str(uuid.uuid4()),
                        "prompt_chars": 40 * (hour - 8), "status": 200, "error": None, "latency_ms": 20.0 + minute,
                        "guard": {"prompt": {"action": "allowed", "entities": {}}}}) + "\n"
            for hour in (9, 10) for minute in range(0, 60, 10)
        )
    )  # fmt: skip
    admin_login(client, ready["compliance_officer"])
    assert client.get("/admin/serving/deployment/").status_code == 200
    page = client.get(f"/admin/serving/deployment/{deployment.pk}/change/")
    assert page.status_code == 200 and str(deployment.grants.get().grant_id).encode() in page.content
    for title in (b"Latency", b"Error and guard-hit rates", b"Prompt-length drift", b"Prompt length (characters)"):
        assert title in page.content
    assert client.get("/admin/serving/deployment/add/").status_code == 403


def test_with_a_serving_platform_approval_renders_manifests_that_carry_the_grant(
    ready: dict[str, Any], staging_policies: Any, settings: Any, client: Any
) -> None:
    import yaml

    from serving.manifests import validate

    settings.SERVING_PLATFORM = "vllm"
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=r"guard.mode: .*vLLM runs none"):
        _request(ready)  # the guard redacts: vLLM cannot honour it
    with pytest.raises(DomainError, match="runtime"):
        _request(ready, guard={"mode": "off"}, target={"gpu_type": "h100", "gpu_count": 1}, runtime="onnx")
    assert Deployment.objects.count() == 0 and Entry.objects.count() == before

    settings.SERVING_PLATFORM = "kserve"
    deployment = _request(ready, target={**TARGET, "gpu_type": "h100", "gpu_count": 1, "replicas": 2})
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    grant, manifest = deployment.grants.get(), deployment.manifests.get()
    assert deployment.state == DeploymentState.HANDED_OFF and deployment.pid is None
    documents = list(yaml.safe_load_all(manifest.text))
    for document in documents:
        validate(document)
    service = next(d for d in documents if d["kind"] == "InferenceService")
    secret = next(d for d in documents if d["kind"] == "Secret")
    assert grant.text in secret["stringData"].values()
    container = service["spec"]["predictor"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] in ("1", 1)
    assert service["spec"]["predictor"]["minReplicas"] == 2
    rendered = Entry.objects.get(action="deployment.manifests_rendered", subject_id=str(deployment.pk))
    assert rendered.index == manifest.ledger_index
    admin_login(client, ready["auditor"])
    listed = client.get(f"/api/v1/deployments/{deployment.pk}/manifests").json()["results"]
    assert listed[0]["sha256"] == manifest.sha256 and listed[0]["grant_id"] == str(grant.grant_id)


def test_an_onnx_deployment_is_exported_on_the_worker_and_served_under_a_grant_for_the_export(
    ready: dict[str, Any], staging_policies: Any
) -> None:
    """The worker's steps, called as the ``serving.export`` task calls them (the worker itself
    is exercised in test_worker): export, the export's digest on record, the grant, the server."""
    import urllib.request

    from serving.grants import folder_weights_digest
    from serving.selectors import inference_log_path as log_path
    from serving.services import deployment_export_onnx, deployment_retire

    deployment = _request(ready, guard={"mode": "off"}, runtime="onnx")
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.STARTING and not deployment.grants.exists()
    from serving.services import deployment_client_credential_issue

    _, credential = deployment_client_credential_issue(
        actor=ready["platform-admin"], deployment=deployment, name="tests", expires_in_days=1
    )
    live = deployment_export_onnx(deployment_id=deployment.pk)
    try:
        assert live.state == DeploymentState.LIVE, live.refusal_reason
        exported = Entry.objects.get(action="deployment.exported", subject_id=str(deployment.pk))
        payload = json.loads(bytes(exported.body))["payload"]
        export_digest = folder_weights_digest(log_path(deployment).parent / "weights")
        assert payload["weights_digest"] == export_digest != ready["base"].weights_digest
        assert payload["source_weights_digest"] == ready["base"].weights_digest
        assert deployment.grants.get().statement["weights_digest"] == export_digest
        body = json.dumps({"prompt": "hello", "max_tokens": 4}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        call = urllib.request.Request(f"{live.url}/v1/completions", body, headers)
        with urllib.request.urlopen(call, timeout=60) as response:
            assert json.loads(response.read())["model_digest"] == export_digest
        assert deployment_export_onnx(deployment_id=deployment.pk).pk == deployment.pk  # a redelivery: no-op
        assert Entry.objects.filter(action="deployment.exported", subject_id=str(deployment.pk)).count() == 1
    finally:
        deployment_retire(actor=ready["platform-admin"], deployment=live, reason="end of test")
