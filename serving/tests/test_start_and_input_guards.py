"""A start only for a deployment that awaits one, under its grant and approval, by one delivery;
deployment requests refused field by field; subject ids that are not ids; inference logs with
unreadable lines; the server's stdout read while it is being written. In process, no worker, and
no model server (every refusal here comes before one would be launched)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.models import Entry
from common.errors import DomainError
from common.testing import admin_login
from governance.models import BreakGlassReview
from governance.services import (
    approval_break_glass,
    approval_request_decide,
    approval_request_submit,
    break_glass_review_close,
)
from governance.subjects import subject_type
from serving.models import Deployment, DeploymentState, InferenceLogSegment
from serving.selectors import inference_log_path
from serving.services import (
    deployment_request,
    deployment_retire,
    deployment_start,
    inference_logs_summarise,
)
from serving.services.start import _read_event, _start_claim

pytestmark = pytest.mark.django_db

TARGET = {"max_tokens": 16, "max_prompt_chars": 500}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS"]}


@pytest.fixture(autouse=True)
def _own_serving_root(settings: Any, tmp_path: Path) -> None:
    settings.SERVING_ROOT = tmp_path / "serving"
    settings.SERVING_ROOT.mkdir()


def _requested(ready: dict[str, Any], name: str = "assistant") -> Deployment:
    return deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name=name, environment="staging",
        target=TARGET, guard=GUARD,
    )  # fmt: skip


def _submitted(ready: dict[str, Any], deployment: Deployment) -> Any:
    return approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip


def _granted(ready: dict[str, Any], name: str = "assistant") -> Deployment:
    """Approved: ``starting``, with a grant, its ``serving.start`` task not yet run."""
    deployment = _requested(ready, name)
    request = _submitted(ready, deployment)
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.STARTING
    return deployment


def _actions(deployment: Deployment) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="deployment", subject_id=str(deployment.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def _launched(deployment: Deployment) -> bool:
    """Whether a start got as far as launching a server (or copying weights for one)."""
    folder = inference_log_path(deployment).parent
    return (folder / "server.out").exists() or (folder / "weights").exists()


# --- 1. starting a deployment ---------------------------------------------------------------------


def test_a_retired_deployment_is_not_started_by_a_late_delivery(ready: dict[str, Any], staging_policies: Any) -> None:
    deployment = _granted(ready)
    grant = deployment.grants.get()
    deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="not needed after all")
    before = _actions(deployment)

    for _ in range(2):  # the task's delivery, and its redelivery
        started = deployment_start(deployment_id=deployment.pk, grant_id=str(grant.grant_id))
        assert started.state == DeploymentState.RETIRED and started.pid is None and not started.url
    assert _actions(deployment) == before and before[-1] == "deployment.retired"
    assert not _launched(deployment)


def test_a_start_whose_approval_was_revoked_is_refused_on_record_once(
    ready: dict[str, Any], staging_policies: Any
) -> None:
    deployment = _requested(ready)
    request = _submitted(ready, deployment)
    approval_break_glass(
        actor=ready["platform-admin"], request_id=request.pk, justification="the incident needs the fix live now"
    )
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.STARTING
    review = BreakGlassReview.objects.get(request=request)
    break_glass_review_close(
        actor=ready["compliance_officer"], review_id=review.pk, outcome="revoked", note="no incident"
    )
    grant_id = str(deployment.grants.get().grant_id)

    refused = deployment_start(deployment_id=deployment.pk, grant_id=grant_id)
    assert refused.state == DeploymentState.REFUSED and "no approval of deployment.deploy holds" in (
        refused.refusal_reason
    )
    assert deployment_start(deployment_id=deployment.pk, grant_id=grant_id).state == DeploymentState.REFUSED
    assert _actions(deployment).count("deployment.refused") == 1 and "deployment.live" not in _actions(deployment)
    assert not _launched(deployment)


def test_a_start_under_an_expired_grant_is_refused_on_record(
    ready: dict[str, Any], staging_policies: Any, settings: Any
) -> None:
    settings.SERVING_GRANT_TTL_S = 1
    deployment = _granted(ready)
    grant = deployment.grants.get()
    time.sleep(max(0.0, (grant.expires_at - grant.issued_at).total_seconds()) + 0.1)

    refused = deployment_start(deployment_id=deployment.pk, grant_id=str(grant.grant_id))
    assert refused.state == DeploymentState.REFUSED and f"grant {grant.grant_id} expired" in refused.refusal_reason
    assert _actions(deployment)[-1] == "deployment.refused" and not _launched(deployment)


def test_one_delivery_claims_a_start_others_change_nothing_and_a_lost_worker_is_taken_over(
    ready: dict[str, Any], staging_policies: Any
) -> None:
    deployment = _granted(ready)
    grant_id = str(deployment.grants.get().grant_id)
    here = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a worker process on this host that died
    gone.wait()

    assert _start_claim(deployment.pk, str(uuid.uuid4()), f"{here}:1") is None  # not its latest grant
    assert _start_claim(deployment.pk, grant_id, f"{here}:{gone.pid}") is not None
    taken = _start_claim(deployment.pk, grant_id, "other-host:7")  # its claimant is gone: taken over
    assert taken is not None and taken[0].claimed_by == "other-host:7"
    assert _start_claim(deployment.pk, grant_id, f"{here}:1") is None  # other-host:7 cannot be checked: its lease runs
    before = _actions(deployment)
    duplicate = deployment_start(deployment_id=deployment.pk, grant_id=grant_id)  # a redelivery
    assert duplicate.state == DeploymentState.STARTING and duplicate.claimed_by == "other-host:7"
    assert _actions(deployment) == before and not _launched(deployment)


# --- 2. deployment requests, field by field ------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "guard", "field"),
    [
        ({}, {"mode": "redact", "entities": [{"x": 1}]}, "guard.entities[0]"),
        ({}, {"mode": "redact", "entities": [["EMAIL_ADDRESS"]]}, "guard.entities[0]"),
        ({}, {"mode": "redact", "entities": ["EMAIL_ADDRESS", 5]}, "guard.entities[1]"),
        ({}, {"mode": "redact", "entities": "EMAIL_ADDRESS"}, "guard.entities"),
        ({}, {"mode": ["redact"]}, "guard.mode"),
        ({}, {"mode": {"a": 1}}, "guard.mode"),
        ({}, {"mode": "off", "threshold": 0.5}, "guard"),
        ({"gpu_type": {"x": 1}}, {"mode": "off"}, "target.gpu_type"),
        ({"gpu_type": None, "gpu_count": 0}, {"mode": "off"}, "target.gpu_type"),
        ({"max_tokens": "8"}, {"mode": "off"}, "target.max_tokens"),
        ({"replicas": 1.5}, {"mode": "off"}, "target.replicas"),
        ({"max_batch": True}, {"mode": "off"}, "target.max_batch"),
    ],
)
def test_a_malformed_target_or_guard_is_a_400_naming_the_field(
    ready: dict[str, Any], client: Any, target: dict[str, Any], guard: dict[str, Any], field: str
) -> None:
    before = Entry.objects.count()
    admin_login(client, ready["ml_engineer"])
    response = client.post(
        f"/api/v1/projects/{ready['project'].slug}/deployments/",
        {"model_version": ready["base"].pk, "name": "assistant", "environment": "staging", "target": target,
         "guard": guard},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and field in error["fields"] and error["message"].startswith(field)
    assert Deployment.objects.count() == 0 and Entry.objects.count() == before


# --- 3. subject ids that are not ids --------------------------------------------------------------


@pytest.mark.parametrize("subject_id", ["²", "\u0661", "\u0663\u0664", str(2**63), "9" * 40, "-1", ""])
def test_a_subject_id_that_is_no_deployment_id_is_not_found(ready: dict[str, Any], subject_id: str) -> None:
    _requested(ready)
    assert subject_type("deployment").get(subject_id) is None
    with pytest.raises(DomainError) as caught:
        approval_request_submit(
            actor=ready["ml_engineer"], subject_type="deployment", subject_id=subject_id, action="deployment.deploy"
        )
    assert caught.value.status_code == 404 and caught.value.code == "not_found"


# --- 4. inference logs with unreadable lines -----------------------------------------------------


def _record(minute: int, **overrides: Any) -> str:
    record = {
        "time": f"2026-03-01T10:{minute:02d}:00.000Z", "request_id": str(uuid.uuid4()), "prompt_chars": 40,
        "status": 200, "error": None, "latency_ms": 20.0 + minute,
        "guard": {"prompt": {"action": "allowed", "entities": {}}},
    } | overrides  # fmt: skip
    return json.dumps(record) + "\n"


def test_unreadable_log_lines_are_skipped_and_counted_never_fatal(
    ready: dict[str, Any], staging_policies: Any, client: Any
) -> None:
    sound, corrupted = _granted(ready, "sound"), _granted(ready, "corrupted")  # the corrupted one is read first
    inference_log_path(sound).parent.mkdir(parents=True)
    inference_log_path(sound).write_text(_record(0) + _record(1))
    log = inference_log_path(corrupted)
    log.parent.mkdir(parents=True)
    torn = _record(2)[:30]  # a crash mid-write, then the restarted server's next line
    log.write_bytes(
        (_record(0) + torn + "\n" + _record(3) + "[1, 2]\n" + _record(4, status="200") + _record(5)).encode()
        + b"\xff\xfe\n"
        + _record(6).encode()
        + b'{"time": "2026-03-01T10:07:00.000Z", "status": 1'  # still being written: not read yet
    )

    assert inference_logs_summarise() == 2
    segment = InferenceLogSegment.objects.get(deployment=corrupted)
    assert segment.requests == 4 and segment.summary["unreadable_lines"] == 4
    assert segment.end_offset == log.read_bytes().rfind(b"\n") + 1
    entry = Entry.objects.get(index=segment.ledger_index)
    assert json.loads(bytes(entry.body))["payload"]["unreadable_lines"] == 4
    sound_summary = InferenceLogSegment.objects.get(deployment=sound).summary
    assert sound_summary["requests"] == 2 and sound_summary["unreadable_lines"] == 0
    assert inference_logs_summarise() == 0  # the bad lines are in the segment: read once

    admin_login(client, ready["ml_engineer"])
    monitoring = client.get(f"/api/v1/deployments/{corrupted.pk}/monitoring?window_s=3600")
    assert monitoring.status_code == 200, monitoring.content
    assert monitoring.json()["unreadable_lines"] == 4 and monitoring.json()["windows"][0]["requests"] == 4
    assert client.get(f"/api/v1/deployments/{sound.pk}/monitoring").json()["unreadable_lines"] == 0

    # A time that parses but lies far back: too many windows for this window length, a 400.
    with log.open("a") as handle:
        handle.write('"}\n' + _record(0, time="1971-01-01T00:00:00.000Z"))
    far = client.get(f"/api/v1/deployments/{corrupted.pk}/monitoring?window_s=60")
    assert far.status_code == 400 and "window_s" in far.json()["error"]["fields"]
    admin_login(client, ready["compliance_officer"])
    assert client.get(f"/admin/serving/deployment/{corrupted.pk}/change/").status_code == 200


# --- 5. the server's stdout, read while it is written --------------------------------------------


def test_a_half_written_event_line_is_read_once_it_is_whole(tmp_path: Path) -> None:
    stdout = tmp_path / "server.out"
    writer = (
        "import sys, time\n"
        'sys.stdout.write(\'{"event": "loading"}\\n{"event": "serv\'); sys.stdout.flush()\n'
        "time.sleep(1.5)\n"
        'sys.stdout.write(\'ing", "port": 8123}\\n\'); sys.stdout.flush()\n'
        "time.sleep(30)\n"
    )
    with stdout.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=out)
    try:
        assert _read_event(stdout, proc, timeout=20) == {"event": "serving", "port": 8123}
    finally:
        proc.kill()
        proc.wait()

    # A server that exits: its last line counts even without a newline.
    with stdout.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", 'import sys; sys.stdout.write(\'{"event": "refused", "reason": "no"}\')'],
            stdout=out,
        )
    assert _read_event(stdout, proc, timeout=20) == {"event": "refused", "reason": "no"}
