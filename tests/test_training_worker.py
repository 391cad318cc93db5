"""Fine-tune runs on the real Celery worker and broker, through the API: request, approvals,
training, MLflow, the registered model version and its lineage, the ledger; duplicate delivery;
cancelling a running run; and a worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings
from django.test import Client

from audits.ledger.models import Entry
from audits.ledger.verification import ledger_verify
from config.celery import declare_queues
from conftest import ROOT, _test_database_url, subprocess_env
from governance.services import api_token_create
from registry.models import ModelVersion
from training.models import FineTuneRun, RunState

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _client(user: Any, system: Any) -> Client:
    token = api_token_create(actor=system, user=user, name="test")[1]
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


def _wait(run_id: int, until: Any, timeout: float = 120) -> FineTuneRun:
    deadline = time.monotonic() + timeout
    while True:
        run = FineTuneRun.objects.get(pk=run_id)
        if until(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is {run.state} {run.progress} {run.failure_reason!r} after {timeout} s")
        time.sleep(0.3)


def _request_and_approve(ready: dict[str, Any], hyperparameters: dict[str, Any]) -> int:
    engineer = _client(ready["ml_engineer"], ready["system"])
    response = engineer.post(
        f"/api/v1/projects/{ready['project'].slug}/fine-tune-runs/",
        {"name": "tone", "base_model_version": ready["base"].pk, "dataset_versions": [ready["version"].pk],
         "hyperparameters": hyperparameters},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    response = engineer.post(
        f"/api/v1/fine-tune-runs/{run_id}/submit", {"action": "fine_tune_run.execute", "comment": "tone v2"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    approver = _client(ready["ml-engineer-2"], ready["system"])
    response = approver.post(
        f"/api/v1/approvals/{response.json()['id']}/approve", {"reason": "data approved, small run"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 200 and response.json()["state"] == "approved", response.content
    return run_id


def test_request_approve_train_track_register_end_to_end(
    ready: dict[str, Any], celery_worker_process: subprocess.Popen[bytes]
) -> None:
    run_id = _request_and_approve(ready, {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 16, "seed": 3})
    run = _wait(run_id, lambda r: r.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED))
    assert run.state == RunState.SUCCEEDED, run.failure_reason
    assert run.device == "cpu" and not run.cpu_fallback and run.metrics["steps"] == 16

    # The output: a new version of the base's model, with its lineage.
    output = ModelVersion.objects.get(pk=run.output_id)
    assert output.model_id == ready["base"].model_id and output.base_id == ready["base"].pk
    assert output.weights_digest != ready["base"].weights_digest
    assert list(output.dataset_versions.all()) == [ready["version"]]
    from registry.services import dataset_version_digest

    assert output.lineage["dataset_versions"] == [dataset_version_digest(ready["version"])]
    assert output.lineage["fine_tune_run"] == run_id and output.lineage["mlflow_run_id"] == run.mlflow_run_id
    assert output.lineage["code_version"] == run.code_version and "torch-2.13.0" in run.code_version

    # MLflow: the run's parameters, per-step loss, the model's files, and the registered version.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)
    tracked = client.get_run(run.mlflow_run_id)
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["hp.learning_rate"] == "0.005" and tracked.data.params["examples"] == "40"
    assert tracked.data.params["dataset_versions"] == dataset_version_digest(ready["version"])
    assert len(client.get_metric_history(run.mlflow_run_id, "loss")) == 16
    assert "model/model.safetensors" in {f.path for f in client.list_artifacts(run.mlflow_run_id, "model")}
    deadline = time.monotonic() + 60
    while not ModelVersion.objects.get(pk=output.pk).mlflow_version:
        assert time.monotonic() < deadline, "the model version was not mirrored into the MLflow registry"
        time.sleep(0.3)
    output.refresh_from_db()
    registered = client.get_model_version(output.mlflow_model_name, output.mlflow_version)
    assert registered.run_id == run.mlflow_run_id

    # The API shows the run, its approval, metrics and the output.
    detail = _client(ready["auditor"], ready["system"]).get(f"/api/v1/fine-tune-runs/{run_id}").json()
    assert detail["state"] == "succeeded" and detail["output"]["id"] == output.pk
    assert detail["approvals"][0]["state"] == "approved" and detail["progress"]["step"] == 16

    # The ledger, in order, and still verifying.
    actions = list(
        Entry.objects.filter(subject_type="fine_tune_run", subject_id=str(run_id)).order_by("index")
        .values_list("action", flat=True)
    )  # fmt: skip
    assert actions == [
        "fine_tune_run.requested", "approval.requested", "approval.approved", "fine_tune_run.queued",
        "fine_tune_run.started", "fine_tune_run.progress", "fine_tune_run.progress", "fine_tune_run.progress",
        "fine_tune_run.succeeded",
    ]  # fmt: skip
    registered_entry = Entry.objects.get(action="model_version.registered", subject_id=str(output.pk))
    assert json.loads(bytes(registered_entry.body))["payload"]["lineage"]["fine_tune_run"] == run_id

    # The same task delivered again (same idempotency key): the worker finds it claimed.
    from config.celery import app

    again = app.send_task("training.run", args=(run_id, str(run.idempotency_key)), queue="cpu")
    assert again.get(timeout=60) is None
    assert FineTuneRun.objects.get(pk=run_id).attempt == 1
    assert Entry.objects.filter(action="fine_tune_run.started", subject_id=str(run_id)).count() == 1
    assert ModelVersion.objects.filter(model=ready["base"].model).count() == 2
    assert ledger_verify().tree_size == Entry.objects.count()  # raises on any fault


def test_cancelling_a_running_run_stops_it_and_records_who(
    ready: dict[str, Any], celery_worker_process: subprocess.Popen[bytes]
) -> None:
    run_id = _request_and_approve(ready, {"learning_rate": 1e-3, "batch_size": 2, "max_steps": 20000, "seed": 1})
    _wait(run_id, lambda r: r.state == RunState.RUNNING and r.progress.get("step", 0) >= 2)
    response = _client(ready["ml-engineer-2"], ready["system"]).post(
        f"/api/v1/fine-tune-runs/{run_id}/cancel", {"reason": "wrong base"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    run = _wait(run_id, lambda r: r.state != RunState.RUNNING, timeout=30)
    assert run.state == RunState.CANCELLED and run.cancelled_by == ready["ml-engineer-2"]
    assert run.output is None and run.progress["step"] < 20000
    assert not [p for p in psutil.process_iter(["cmdline"]) if f"run-{run_id}-1" in " ".join(p.info["cmdline"] or [])]
    actions = list(
        Entry.objects.filter(subject_id=str(run_id), subject_type="fine_tune_run").values_list("action", flat=True)
    )
    assert actions[-2:] == ["fine_tune_run.cancel_requested", "fine_tune_run.cancelled"]


def test_a_worker_killed_mid_run_leaves_it_failed_and_it_can_start_again(
    ready: dict[str, Any], celery_worker_process: subprocess.Popen[bytes], tmp_path: Path, settings: Any
) -> None:
    # A worker of its own, on a CPU queue of its own, in its own process group: killed outright.
    queue = f"doomed-{uuid.uuid4().hex[:6]}"
    settings.TRAINING_CPU_QUEUE = queue
    declare_queues(queue)
    with (tmp_path / "doomed.log").open("wb") as log:
        doomed = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config.celery", "worker", "--pool", "prefork",
             "--concurrency", "1", "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=subprocess_env(DATABASE_URL=_test_database_url()), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        run_id = _request_and_approve(ready, {"learning_rate": 1e-3, "batch_size": 2, "max_steps": 20000, "seed": 1})
        running = _wait(run_id, lambda r: r.state == RunState.RUNNING and r.progress.get("step", 0) >= 2, 180)
        assert running.queue == queue and running.claimed_by
        trainer = [
            p for p in psutil.process_iter(["cmdline"]) if f"run-{run_id}-1" in " ".join(p.info["cmdline"] or [])
        ]
        assert len(trainer) == 1
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    trainer[0].wait(timeout=30)  # the training process dies with its worker (PR_SET_PDEATHSIG)
    assert FineTuneRun.objects.get(pk=run_id).state == RunState.RUNNING  # nobody knows yet

    settings.TRAINING_HEARTBEAT_TIMEOUT_S = 2
    time.sleep(3)
    from training.tasks import reap

    left = Path(settings.TRAINING_WORK_ROOT) / f"run-{run_id}-1"
    assert (left / "texts.json").exists() and (left / "base").exists()  # no finally ran in the killed worker
    assert reap() == 1  # the beat task: the reaper, then the sweep of folders no live attempt owns
    failed = FineTuneRun.objects.get(pk=run_id)
    assert failed.state == RunState.FAILED and failed.failure_reason.startswith(f"worker lost: {running.claimed_by}")
    assert not (left / "texts.json").exists() and not (left / "base").exists() and not (left / "output").exists()

    # Its approval still holds: it can start again, as a new attempt with a new key.
    settings.TRAINING_CPU_QUEUE = "cpu"
    engineer = _client(ready["ml_engineer"], ready["system"])
    response = engineer.post(f"/api/v1/fine-tune-runs/{run_id}/start")
    assert response.status_code == 200, response.content
    assert response.json()["attempt"] == 2 and response.json()["state"] in ("queued", "running")
    response = engineer.post(
        f"/api/v1/fine-tune-runs/{run_id}/cancel", {"reason": "enough"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert _wait(run_id, lambda r: r.state == RunState.CANCELLED, timeout=60).cancelled_by == ready["ml_engineer"]
