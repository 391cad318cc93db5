"""Monitoring that acts, through the real worker: a live deployment on the tiny model whose
prompts drift from its baseline window; the worker's log summary judges the log against the
monitoring policy, opens one review (ledgered, mailed) and pauses the deployment (its server
stops); the next beats update the review instead of opening another; a person acknowledges and
resolves it through the API, and resuming serves again on the deployment's grant."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.test import Client

from common.testing import admin_login
from conftest import start_celery_worker, stop_celery_worker
from serving.models import AlertState, Deployment, DeploymentAlert, DeploymentState
from serving.selectors import inference_log_path
from serving.services import deployment_client_credential_issue, deployment_resume, deployment_retire
from serving.tasks import summarise_logs
from serving.tests.deploying import actions, approve, request

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# Staging pauses here (the shipped staging rule only notifies), and judges small windows.
MONITOR = """action: deployment.monitor
rules:
  - when: {environment: staging}
    window_minutes: 60
    thresholds: {min_requests: 5, prompt_chars_psi: 0.25, error_rate: 0.5}
    on_breach: {review: true, notify: [platform_admin, compliance_officer], pause: true}
"""


# This test's worker has a queue of its own, and its tasks go there: the suite's shared worker
# (conftest.celery_worker_process), alive once an earlier test started it, judges logs against the
# shipped policies and would take half of them.
QUEUE = "alerts-test"


@pytest.fixture
def worker(staging_policies: Path, tmp_path: Path, settings: Any) -> Any:
    (staging_policies / "deployment.monitor.yaml").write_text(MONITOR)
    mail = tmp_path / "mail"
    mail.mkdir()
    settings.TRAINING_CPU_QUEUE = QUEUE  # where this process sends the deployment's starts
    proc = start_celery_worker(
        QUEUE, POLICY_DIR=str(staging_policies), TRAINING_CPU_QUEUE=QUEUE,
        EMAIL_BACKEND="serving.tests.alerts_mailbox.FolderBackend", ALERTS_TEST_MAIL_DIR=str(mail),
    )  # fmt: skip
    try:
        yield mail
    finally:
        stop_celery_worker(proc)


def _settled(pk: int, timeout: float = 240) -> Deployment:
    deadline = time.monotonic() + timeout
    while True:
        deployment = Deployment.objects.get(pk=pk)
        if deployment.state not in (DeploymentState.REQUESTED, DeploymentState.STARTING):
            return deployment
        assert time.monotonic() < deadline, f"deployment {pk} still {deployment.state}"
        time.sleep(0.5)


def _complete(url: str, prompt: str, credential: str) -> None:
    body = json.dumps({"prompt": prompt, "max_tokens": 2}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/completions", body, headers), timeout=60):
        pass


def _served(deployment: Deployment, at: datetime, chars: int, count: int) -> None:
    """Lines as the server writes them (the baseline hour, before the server served)."""
    with inference_log_path(deployment).open("a") as log:
        for i in range(count):
            record = {"time": (at + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                      "request_id": str(uuid.uuid4()), "deployment": deployment.pk, "status": 200,
                      "latency_ms": 4.0, "prompt_chars": chars, "guard": {}}  # fmt: skip
            log.write(json.dumps(record, separators=(",", ":")) + "\n")


def _hour_with_room(margin_s: int = 120) -> datetime:
    """The start of the current hour, once at least ``margin_s`` of it remain: the policy's windows
    are whole hours, and the live requests must fall in one of them (near the hour's end, this
    waits for the next one)."""
    now = datetime.now(UTC)
    left = 3600 - (now.minute * 60 + now.second)
    if left < margin_s:
        time.sleep(left + 1)
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def test_a_drift_alert_opens_a_review_pauses_and_resumes(ready: dict[str, Any], worker: Path) -> None:
    for name in ("ml_engineer", "platform-admin"):
        ready[name].email = f"{name}@example.org"
        ready[name].save()
    deployment = _settled(approve(ready, request(ready, target={"max_tokens": 4, "max_prompt_chars": 400})).pk)
    assert deployment.state == DeploymentState.LIVE, deployment.refusal_reason
    _, credential = deployment_client_credential_issue(
        actor=ready["platform-admin"], deployment=deployment, name="tests", expires_in_days=1
    )
    hour = _hour_with_room()
    _served(deployment, hour - timedelta(hours=2), chars=12, count=6)  # the baseline: short prompts
    for i in range(6):  # now: long prompts, through the real server
        _complete(deployment.url, f"question {i}: " + "tell me more about the weather " * 9, credential)

    assert summarise_logs.apply_async(queue=QUEUE).get(timeout=120) == 1
    [alert] = DeploymentAlert.objects.filter(deployment=deployment)
    assert alert.metric == "prompt_chars_psi" and alert.observed > 0.25 and alert.threshold == 0.25
    assert alert.state == AlertState.OPEN and alert.paused and alert.requests == 6
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PAUSED and deployment.pid is None
    assert actions(deployment)[-3:] == ["deployment.inference_log", "deployment_alert.opened", "deployment.paused"]
    from audits.ledger.models import Entry

    opened = Entry.objects.get(action="deployment_alert.opened", subject_id=str(deployment.pk))
    body = json.loads(bytes(opened.body))
    assert body["payload"]["metric"] == "prompt_chars_psi" and body["payload"]["threshold"] == 0.25
    assert body["payload"]["window"]["start"] == hour.isoformat() and body["policy_hash"] == alert.policy_hash
    # The server really stopped: its port refuses the next request.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _complete(deployment.url, "still there?", credential)
    [mail] = [p.read_text() for p in worker.iterdir()]
    assert "Review needed: prompt_chars_psi" in mail and "paused" in mail
    assert "ml_engineer@example.org" in mail and "platform-admin@example.org" in mail

    # The next beat: nothing new, nothing changes; a new line still drifting updates the review.
    assert summarise_logs.apply_async(queue=QUEUE).get(timeout=60) == 0
    late = min(datetime.now(UTC), alert.window_end - timedelta(seconds=1)).replace(microsecond=0)
    _served(deployment, late, chars=300, count=1)  # in the review's window, whatever the clock says now
    assert summarise_logs.apply_async(queue=QUEUE).get(timeout=60) == 1
    [alert] = DeploymentAlert.objects.filter(deployment=deployment)
    assert alert.requests == 7 and actions(deployment)[-1] == "deployment_alert.updated"
    assert actions(deployment).count("deployment_alert.opened") == 1 and len(list(worker.iterdir())) == 1

    # Resuming waits for the review; a person acknowledges and resolves it with a reason.
    client = Client()
    admin_login(client, ready["platform-admin"])
    refused = client.post(f"/api/v1/deployments/{deployment.pk}/resume", {"reason": "fixed"}, "application/json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "alerts_open", refused.content
    for command in ("acknowledge", "resolve"):
        done = client.post(
            f"/api/v1/deployment-alerts/{alert.pk}/{command}", {"reason": "a new client sends longer prompts"},
            "application/json",
        )  # fmt: skip
        assert done.status_code == 200, done.content
    assert done.json()["state"] == "resolved" and done.json()["resolved_by"] == "platform-admin"
    resumed = client.post(
        f"/api/v1/deployments/{deployment.pk}/resume", {"reason": "expected traffic"}, "application/json"
    )
    assert resumed.status_code == 200 and resumed.json()["state"] == "starting", resumed.content
    live = _settled(deployment.pk)
    assert live.state == DeploymentState.LIVE, live.refusal_reason
    _complete(live.url, "back again", credential)
    assert actions(live)[-4:-1] == ["deployment_alert.acknowledged", "deployment_alert.resolved", "deployment.resumed"]
    assert actions(live)[-1] == "deployment.live"
    assert psutil.pid_exists(live.pid)
    deployment_retire(actor=ready["platform-admin"], deployment=live, reason="end of test")
    with pytest.raises(Exception, match="not paused"):
        deployment_resume(actor=ready["platform-admin"], deployment=live, reason="again")
