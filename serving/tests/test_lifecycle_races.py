"""Stale pids are never signalled, rollback restores only a replaced version, promotion keeps the
runtime, concurrent feedback and log summaries end in a conflict or a skip (never an integrity
error), an ONNX export redelivered or outlived by a retirement grants nothing twice, and the
admin's project filter lists only visible projects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.models import Entry
from common.errors import Conflict
from common.testing import admin_login
from governance.services import project_create
from serving import services
from serving.models import Deployment, DeploymentState, InferenceFeedback, InferenceLogSegment
from serving.selectors import deployment_folder, inference_log_path
from serving.services import (
    deployment_promote,
    deployment_retire,
    deployment_rollback,
    deployments_supervise,
    feedback,
    grants,
    inference_log,
    lifecycle,
)
from serving.tests import deploying

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_serving_root")]


# --- 1. A stale pid is never signalled --------------------------------------------------------------


@pytest.fixture
def bystander() -> Any:
    """A process that is not a model server, in its own session (as a recycled pid would be)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _still_running(proc: subprocess.Popen[bytes]) -> bool:
    time.sleep(0.3)
    return proc.poll() is None


@pytest.mark.parametrize("state", [DeploymentState.FAILED, DeploymentState.EXPIRED, DeploymentState.REPLACED])
def test_retiring_a_stopped_deployment_never_signals_its_old_pid(
    ready: dict[str, Any], state: str, bystander: Any
) -> None:
    deployment = deploying.put(deploying.request(ready), state=state, pid=bystander.pid)
    deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="cleanup")
    assert _still_running(bystander), f"an unrelated process was killed: rc={bystander.poll()}"
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RETIRED and deployment.pid is None
    assert deploying.actions(deployment)[-1] == "deployment.retired"


def test_a_live_deployment_whose_pid_is_another_process_is_failed_not_signalled(
    ready: dict[str, Any], bystander: Any
) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE, pid=bystander.pid)
    assert deployments_supervise() == 1
    assert _still_running(bystander), f"an unrelated process was killed: rc={bystander.poll()}"
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.FAILED and deployment.pid is None
    assert deploying.actions(deployment)[-1] == "deployment.failed"


def _wait_for_exec(pid: int, marker: str, timeout: float = 10.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while marker not in psutil.Process(pid).cmdline():
        assert time.monotonic() < deadline, f"process {pid} never showed {marker} on its command line"
        time.sleep(0.01)


def test_retiring_a_live_deployment_stops_its_own_server(ready: dict[str, Any]) -> None:
    deployment = deploying.request(ready)
    grant_note = deployment_folder(deployment) / "grant.note"
    # Stands in for the server: what identifies it is the grant file on its command line.
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--grant", str(grant_note)], start_new_session=True
    )
    try:
        _wait_for_exec(server.pid, str(grant_note))  # before exec the child still shows pytest's command line
        deployment = deploying.put(deployment, state=DeploymentState.LIVE, pid=server.pid)
        deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="done")
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RETIRED and deployment.pid is None


# --- 2. Rollback restores only a replaced version ------------------------------------------------


def _live_over(ready: dict[str, Any], monkeypatch: Any) -> tuple[Deployment, Deployment]:
    monkeypatch.setattr(grants, "dispatch_on_commit", lambda *args, **kwargs: None)
    monkeypatch.setattr(lifecycle, "dispatch_on_commit", lambda *args, **kwargs: None)
    previous = deploying.put(deploying.approve(ready, deploying.request(ready)), state=DeploymentState.REPLACED)
    current = deploying.put(deploying.request(ready), state=DeploymentState.LIVE, previous=previous)
    return previous, current


def test_rollback_refuses_a_previous_version_that_was_retired(
    ready: dict[str, Any], staging_policies: Any, monkeypatch: Any
) -> None:
    previous, current = _live_over(ready, monkeypatch)
    deployment_retire(actor=ready["platform-admin"], deployment=previous, reason="withdrawn for good")
    before, grants = Entry.objects.count(), previous.grants.count()
    with pytest.raises(Conflict, match="is retired, not replaced") as refused:
        deployment_rollback(actor=ready["platform-admin"], deployment=current, reason="bad release")
    assert refused.value.code == "previous_not_replaced" and refused.value.status_code == 409
    previous.refresh_from_db()
    current.refresh_from_db()
    assert previous.state == DeploymentState.RETIRED and previous.grants.count() == grants
    assert current.state == DeploymentState.LIVE and Entry.objects.count() == before


def test_rollback_restores_a_replaced_version(ready: dict[str, Any], staging_policies: Any, monkeypatch: Any) -> None:
    previous, current = _live_over(ready, monkeypatch)
    restored = deployment_rollback(actor=ready["platform-admin"], deployment=current, reason="bad release")
    assert restored.pk == previous.pk and restored.state == DeploymentState.STARTING
    assert (
        deploying.actions(current)[-1] == "deployment.rolled_back"
        and deploying.actions(previous)[-1] == "deployment.granted"
    )


# --- 3. Promotion keeps the runtime -------------------------------------------------------------


def test_promotion_keeps_the_staging_runtime(ready: dict[str, Any], monkeypatch: Any) -> None:
    import governance.services

    # The production policy's evidence (scans, evaluations) is not what this test is about.
    monkeypatch.setattr(governance.services, "approval_request_submit", lambda **kwargs: None)
    staging = deploying.put(deploying.request(ready, runtime="onnx"), state=DeploymentState.LIVE)
    promoted = deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    assert promoted.runtime == "onnx" and promoted.environment == "production"
    entry = Entry.objects.get(subject_type="deployment", subject_id=str(promoted.pk), action="deployment.requested")
    assert json.loads(bytes(entry.body))["payload"]["runtime"] == "onnx"


# --- 4. Concurrent feedback on one request ------------------------------------------------------


def test_feedback_racing_a_twin_request_is_a_conflict(ready: dict[str, Any], monkeypatch: Any) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    request_id = uuid.uuid4()
    log = inference_log_path(deployment)  # the request was served (feedback names served requests only)
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"request_id": str(request_id), "deployment": deployment.pk, "status": 200}) + "\n")
    real_append = feedback.ledger_append
    rater = ready["compliance_officer"]

    def twin_commits_first(**kwargs: Any) -> Any:  # the twin inserts between the check and the insert
        InferenceFeedback.objects.create(
            deployment=deployment, request_id=request_id, rating=5, category="helpful", given_by=rater
        )
        return real_append(**kwargs)

    monkeypatch.setattr(feedback, "ledger_append", twin_commits_first)
    before = Entry.objects.filter(action="deployment.feedback").count()
    with pytest.raises(Conflict) as refused:
        services.deployment_feedback_give(
            actor=rater, deployment=deployment, request_id=str(request_id), rating=1, category="harmful"
        )
    assert refused.value.code == "feedback_given"
    assert Entry.objects.filter(action="deployment.feedback").count() == before


# --- 5. ONNX export redelivered, or outlived by a retirement -------------------------------------


@pytest.fixture
def fake_export(monkeypatch: Any) -> None:
    """The export's slow parts (materialising, exporting, hashing) reduced to folders."""
    import serving.grants

    monkeypatch.setattr(
        "serving.services.export.model_version_materialise", lambda version, folder: folder.mkdir(parents=True)
    )
    monkeypatch.setattr(serving.grants, "folder_weights_digest", lambda folder: "sha256:" + "ab" * 32)
    monkeypatch.setattr(grants, "dispatch_on_commit", lambda *args, **kwargs: None)
    monkeypatch.setattr(lifecycle, "dispatch_on_commit", lambda *args, **kwargs: None)


def test_an_export_redelivered_while_exporting_grants_once(
    ready: dict[str, Any], staging_policies: Any, fake_export: None, monkeypatch: Any
) -> None:
    import serving.onnx_model

    started: list[int] = []
    monkeypatch.setattr(
        "serving.services.export.deployment_start", lambda **kwargs: started.append(kwargs["deployment_id"])
    )
    deployment = deploying.approve(ready, deploying.request(ready, guard={"mode": "off"}, runtime="onnx"))
    assert deployment.state == DeploymentState.STARTING
    exports = []

    def export(source: Path, weights: Path) -> None:
        weights.mkdir(parents=True, exist_ok=True)
        exports.append(weights)
        if len(exports) == 1:  # a second delivery of serving.export arrives while the first exports
            services.deployment_export_onnx(deployment_id=deployment.pk)

    monkeypatch.setattr(serving.onnx_model, "export_onnx", export)
    services.deployment_export_onnx(deployment_id=deployment.pk)
    assert len(exports) == 1 and deployment.grants.count() == 1
    assert deploying.actions(deployment).count("deployment.exported") == 1
    assert started == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.claimed_by == ""  # left for the start to claim


def test_an_export_finishing_after_retirement_grants_nothing(
    ready: dict[str, Any], staging_policies: Any, fake_export: None, monkeypatch: Any
) -> None:
    import serving.onnx_model

    deployment = deploying.approve(ready, deploying.request(ready, guard={"mode": "off"}, runtime="onnx"))
    weights = deployment_folder(deployment) / "weights"

    def export(source: Path, weights: Path) -> None:
        weights.mkdir(parents=True, exist_ok=True)
        deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="stop it")

    monkeypatch.setattr(serving.onnx_model, "export_onnx", export)
    result = services.deployment_export_onnx(deployment_id=deployment.pk)
    assert result.state == DeploymentState.RETIRED
    assert not deployment.grants.exists() and not weights.exists()
    assert "deployment.exported" not in deploying.actions(deployment)
    assert deploying.actions(deployment)[-1] == "deployment.retired"


# --- 6. Overlapping summaries -------------------------------------------------------------------


def test_a_segment_summarised_by_a_concurrent_run_does_not_stop_the_others(
    ready: dict[str, Any], monkeypatch: Any
) -> None:
    deployments = [
        deploying.put(deploying.request(ready, name=f"svc-{i}"), state=DeploymentState.LIVE) for i in range(2)
    ]
    line = json.dumps({"time": "2025-01-01T00:00:00Z", "status": 200, "latency_ms": 1.0}) + "\n"
    for deployment in deployments:
        path = inference_log_path(deployment)
        path.parent.mkdir(parents=True)
        path.write_text(line)
    real_append = inference_log.ledger_append
    raced: list[int] = []

    def other_run_first(**kwargs: Any) -> Any:  # another run records the first segment meanwhile
        if not raced:
            raced.append(int(kwargs["subject"].id))
            InferenceLogSegment.objects.create(
                deployment_id=raced[0], start_offset=0, end_offset=len(line), requests=1, summary={}, sha256="x",
                ledger_index=0,
            )  # fmt: skip
        return real_append(**kwargs)

    monkeypatch.setattr(inference_log, "ledger_append", other_run_first)
    assert services.inference_logs_summarise() == 1
    others = [d for d in deployments if d.pk != raced[0]]
    assert InferenceLogSegment.objects.filter(deployment=others[0]).count() == 1
    assert Entry.objects.filter(action="deployment.inference_log", subject_id=str(raced[0])).count() == 0


# --- 7. The admin's project filter --------------------------------------------------------------


def test_the_admin_project_filter_lists_only_visible_projects(people: dict[str, Any], client: Any) -> None:
    project_create(actor=people["system"], slug="secret-merger", name="Secret Merger")
    admin_login(client, people["compliance_officer"])
    response = client.get("/admin/serving/deployment/")
    assert response.status_code == 200
    assert b"secret-merger" not in response.content
