"""Deployments through the real worker: request, evidence, approval, grant, the model server on
the tiny model answering a completion, its inference log summarised into the ledger; a version
whose weights changed after approval refused; rollback; and a grant that expires stopping it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from django.test import Client

from audits.ledger.models import Entry
from common import artifacts
from common.testing import admin_login
from governance.services import approval_request_decide, approval_request_submit
from registry.services import model_version_register_folder
from registry.tiny_model import build_tiny_gpt2
from serving.models import Deployment, DeploymentState
from serving.services import (
    deployment_client_credential_issue,
    deployment_request,
    deployment_retire,
    deployment_rollback,
    deployments_supervise,
    inference_logs_summarise,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
TARGET = {"max_tokens": 8, "max_prompt_chars": 400}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS", "CREDIT_CARD"]}


def _deploy(ready: dict[str, Any], model_version: Any) -> Deployment:
    deployment = deployment_request(
        actor=ready["ml_engineer"], model_version=model_version, name="assistant", environment="staging",
        target=TARGET, guard=GUARD,
    )  # fmt: skip
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy"
    )
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="pilot")
    return deployment


def _settled(pk: int, timeout: float = 240) -> Deployment:
    deadline = time.monotonic() + timeout
    while True:
        deployment = Deployment.objects.get(pk=pk)
        if deployment.state not in (DeploymentState.REQUESTED, DeploymentState.STARTING):
            return deployment
        assert time.monotonic() < deadline, f"deployment {pk} still {deployment.state}"
        time.sleep(0.5)


def _complete(url: str, prompt: str, credential: str) -> dict[str, Any]:
    body = json.dumps({"prompt": prompt, "max_tokens": 4}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
    request = urllib.request.Request(f"{url}/v1/completions", body, headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return {**json.loads(response.read()), "request_id": response.headers["X-Request-Id"]}


def _actions(deployment: Deployment) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="deployment", subject_id=str(deployment.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def test_deploy_serve_log_roll_back_and_expire(
    ready: dict[str, Any],
    staging_policies: Any,
    celery_worker_process: subprocess.Popen[bytes],
    tmp_path: Any,
    settings: Any,
) -> None:
    first = _settled(_deploy(ready, ready["base"]).pk)
    assert first.state == DeploymentState.LIVE, first.refusal_reason
    # One credential for the name and environment: the versions that replace it accept it too.
    _, credential = deployment_client_credential_issue(
        actor=ready["platform-admin"], deployment=first, name="tests", expires_in_days=1
    )
    answer = _complete(first.url, "mail ana@example.org about card 4111 1111 1111 1111", credential)
    assert answer["model_digest"] == ready["base"].weights_digest and answer["guard"]["prompt"] == "redacted"
    assert inference_logs_summarise() == 1
    segment = first.log_segments.get()
    assert segment.requests == 1 and segment.summary["guard"]["prompt:redacted"] == 1
    log_text = (settings.SERVING_ROOT / f"deployment-{first.pk}" / "inference.jsonl").read_text()
    assert "ana@example.org" not in log_text and "4111" not in log_text
    assert _actions(first)[:7] == [
        "deployment.requested", "approval.requested", "approval.approved", "deployment.granted", "deployment.live",
        "deployment.client_credential_issued", "deployment.inference_log",
    ]  # fmt: skip

    # Feedback on that answer, and the monitoring view of the log, through the API.
    client = Client()
    admin_login(client, ready["ml_engineer"])
    rated = client.post(
        f"/api/v1/deployments/{first.pk}/feedback",
        {"request_id": answer["request_id"], "rating": 2, "category": "incorrect"}, content_type="application/json",
    )  # fmt: skip
    assert rated.status_code == 201, rated.content
    again = client.post(
        f"/api/v1/deployments/{first.pk}/feedback",
        {"request_id": answer["request_id"], "rating": 5, "category": "helpful"}, content_type="application/json",
    )  # fmt: skip
    assert again.status_code == 409 and again.json()["error"]["code"] == "feedback_given"
    assert _actions(first)[-1] == "deployment.feedback"
    _complete(first.url, "a plain question", credential)
    monitoring = client.get(f"/api/v1/deployments/{first.pk}/monitoring?window_s=3600").json()
    window = monitoring["windows"][-1]
    assert sum(w["requests"] for w in monitoring["windows"]) == 2 and window["errors"] == 0
    assert sum(w["guard"]["by_entity"].get("EMAIL_ADDRESS", 0) for w in monitoring["windows"]) == 1
    assert sum(w["feedback"]["count"] for w in monitoring["windows"]) == 1
    assert monitoring["feedback_by_category"] == {"incorrect": 1}
    assert monitoring["windows"][0]["drift"]["prompt_chars_psi"] == 0.0
    bad = client.get(f"/api/v1/deployments/{first.pk}/monitoring?window_s=5")
    assert bad.status_code == 400 and "window_s" in bad.content.decode()

    # A second version, whose weights change in the store after its approval: refused, on record.
    other = build_tiny_gpt2(tmp_path / "imports" / "tiny-2", seed=2)
    settings.REGISTRY_ALLOWED_ROOTS = [(tmp_path / "imports").resolve()]
    second_version, _ = model_version_register_folder(
        actor=ready["ml_engineer"], model=ready["base"].model, folder=str(other)
    )
    blob = artifacts.blob_path(second_version.files["model.safetensors"])
    original = blob.read_bytes()
    deployment = _deploy(ready, second_version)
    blob.chmod(0o644)
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        refused = _settled(deployment.pk)
    finally:
        blob.write_bytes(original)
    assert refused.state == DeploymentState.REFUSED and "no longer matches its digest" in refused.refusal_reason
    assert _actions(refused)[-1] == "deployment.refused"

    # The same version again, intact: it replaces the first; rolling back restores the first.
    asked = time.monotonic()
    second = _settled(_deploy(ready, second_version).pk)
    start_s = time.monotonic() - asked  # how long a server takes to start on this machine, now
    assert second.state == DeploymentState.LIVE, second.refusal_reason
    assert Deployment.objects.get(pk=first.pk).state == DeploymentState.REPLACED and second.previous_id == first.pk
    restored = deployment_rollback(actor=ready["platform-admin"], deployment=second, reason="answers got worse")
    restored = _settled(restored.pk)
    assert restored.pk == first.pk and restored.state == DeploymentState.LIVE
    assert _complete(restored.url, "hello", credential)["model_digest"] == ready["base"].weights_digest
    rolled = Entry.objects.get(action="deployment.rolled_back", subject_id=str(second.pk))
    assert json.loads(bytes(rolled.body))["actor"]["name"] == "platform-admin"

    # A grant that expires: the server stops, and supervision records it.
    # Long enough for the server to start (Presidio, torch) however busy the cores are: three times
    # what the last start took, so the test waits for the expiry no longer than it must.
    settings.SERVING_GRANT_TTL_S = max(15, round(3 * start_s) + 5)
    short = _settled(_deploy(ready, ready["base"]).pk)
    assert short.state == DeploymentState.LIVE
    deadline = time.monotonic() + settings.SERVING_GRANT_TTL_S
    while deployments_supervise() == 0:
        assert time.monotonic() < deadline, "the expired deployment was not noticed"
        time.sleep(1)
    expired = Deployment.objects.get(pk=short.pk)
    assert expired.state == DeploymentState.EXPIRED and _actions(expired)[-1] == "deployment.expired"
    for live in Deployment.objects.filter(state=DeploymentState.LIVE):
        deployment_retire(actor=ready["platform-admin"], deployment=live, reason="end of test")
