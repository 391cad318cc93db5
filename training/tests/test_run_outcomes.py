"""How a run ends when something changes under it, and what it leaves on disk: a dataset version
erased during training fails the run on record (not as a lost worker); no copy of the training
records outlives the run, whatever its end; ids in a request answer alike whether missing or in a
project the caller cannot see. Training really runs (the tiny model, in a child process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from audits.ledger.models import Entry
from common import artifacts
from common.errors import Conflict, DomainError
from governance.services import api_token_create, approval_request_submit
from registry.models import ModelVersion
from training.governed import _run
from training.models import FineTuneRun, RunState
from training.services import execution, fine_tune_run_cancel, fine_tune_run_execute, fine_tune_runs_reap
from training.tests.conftest import approve_run, request_run, run_actions, run_payload

pytestmark = pytest.mark.django_db


def _workdir(run: FineTuneRun) -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / f"run-{run.pk}-{run.attempt}"


def _execute(run: FineTuneRun) -> FineTuneRun:
    done = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert done is not None
    return done


def test_a_successful_run_leaves_no_copy_of_its_training_records(ready: dict[str, Any]) -> None:
    run = approve_run(ready, request_run(ready))
    done = _execute(run)
    assert done.state == RunState.SUCCEEDED, done.failure_reason
    workdir = _workdir(done)
    assert workdir.is_dir() and not (workdir / "texts.json").exists() and not (workdir / "base").exists()
    # The registered output stays: it is the model version's source.
    assert Path(done.output.source) == (workdir / "output").resolve() and (workdir / "output").is_dir()


def test_a_dataset_version_erased_during_training_fails_the_run_on_record(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry.services import dataset_version_erase_records

    run = approve_run(ready, request_run(ready))
    train = execution._train

    def train_then_erase(*args: Any, **kwargs: Any) -> Any:
        """The real training; then an Art. 17 erasure of the run's dataset version lands before
        the output is registered (the order a long run meets in production)."""
        outcome = train(*args, **kwargs)
        dataset_version_erase_records(
            actor=ready["compliance_officer"], version=ready["version"], record_numbers={1}, reason="Art. 17 request"
        )
        return outcome

    monkeypatch.setattr(execution, "_train", train_then_erase)
    models_before = ModelVersion.objects.count()
    done = _execute(run)

    assert done.state == RunState.FAILED
    assert done.failure_reason.startswith("registering the output failed: ")
    assert "erased (Art. 17 request)" in done.failure_reason
    assert done.output is None and done.finished_at is not None and done.mlflow_run_id
    assert ModelVersion.objects.count() == models_before
    assert run_actions(run)[-1] == "fine_tune_run.failed" and "fine_tune_run.succeeded" not in run_actions(run)
    assert run_payload(run, "fine_tune_run.failed")["reason"] == done.failure_reason
    # Not left running for the reaper to call a lost worker.
    with override_settings(TRAINING_HEARTBEAT_TIMEOUT_S=0):
        assert fine_tune_runs_reap(actor=ready["system"]) == 0
    # No copy of the erased records, nor weights trained on them, stays in the work folder.
    workdir = _workdir(done)
    assert not (workdir / "texts.json").exists()
    assert not (workdir / "output").exists() and not (workdir / "base").exists()
    # Nor in MLflow: the run holds its parameters and metrics, no weights.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)
    assert client.get_run(done.mlflow_run_id).data.metrics["final_loss"] > 0
    assert client.list_artifacts(done.mlflow_run_id) == []


def test_a_run_cancelled_while_training_leaves_no_copy_of_its_training_records(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = approve_run(ready, request_run(ready))
    launch = execution.launch_command

    def cancel_then_launch(**kwargs: Any) -> list[str]:
        """The run is running and its texts are on disk: a cancellation arrives as it starts."""
        fine_tune_run_cancel(actor=ready["ml-engineer-2"], run=FineTuneRun.objects.get(pk=run.pk), reason="wrong data")
        assert (kwargs["workdir"] / "texts.json").is_file()
        return launch(**kwargs)

    monkeypatch.setattr(execution, "launch_command", cancel_then_launch)
    done = _execute(run)
    assert done.state == RunState.CANCELLED and done.cancelled_by == ready["ml-engineer-2"]
    workdir = _workdir(done)
    assert not (workdir / "texts.json").exists() and not (workdir / "output").exists()


def test_a_request_whose_dataset_bytes_left_the_store_is_refused_and_changes_nothing(ready: dict[str, Any]) -> None:
    blob = artifacts.blob_path(ready["version"].sha256)
    original = blob.read_bytes()  # the store is shared by every test: put the bytes back after
    blob.unlink()
    before = Entry.objects.count()
    try:
        with pytest.raises(Conflict, match=f"dataset version {ready['version'].pk}: blob .* is missing") as caught:
            request_run(ready)
    finally:
        artifacts.put_bytes(original)
    assert caught.value.code == "blob_missing" and caught.value.status_code == 409
    assert FineTuneRun.objects.count() == 0 and Entry.objects.count() == before


def _engineer(ready: dict[str, Any]) -> Client:
    token = api_token_create(actor=ready["system"], user=ready["ml_engineer"], name="t")[1]
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


@pytest.mark.parametrize(
    ("field", "key", "many"),
    [
        ("dataset_versions", "dataset_version", True),
        ("base_model_version", "model_version", False),
        ("prompt_template", "prompt_template", False),
    ],
)
def test_an_id_of_a_project_the_caller_cannot_see_answers_like_a_missing_one(
    ready: dict[str, Any], elsewhere: dict[str, Any], field: str, key: str, many: bool
) -> None:
    engineer = _engineer(ready)
    body = {
        "name": "tone", "base_model_version": ready["base"].pk, "dataset_versions": [ready["version"].pk],
        "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 5},
    }  # fmt: skip

    def answer(pk: int) -> tuple[int, str]:
        response = engineer.post(
            f"/api/v1/projects/{ready['project'].slug}/fine-tune-runs/", {**body, field: [pk] if many else pk},
            content_type="application/json",
        )  # fmt: skip
        return response.status_code, json.dumps(response.json(), sort_keys=True)

    before = Entry.objects.count()
    hidden = elsewhere[key].pk
    missing_status, missing = answer(999999)
    hidden_status, hidden_body = answer(hidden)
    assert hidden_status == missing_status == 400
    assert hidden_body == missing.replace("999999", str(hidden)), hidden_body
    assert "another project" not in hidden_body
    assert FineTuneRun.objects.count() == 0 and Entry.objects.count() == before


@pytest.mark.parametrize("subject_id", ["²", "\u0661", str(2**63), str(2**64), "-1", ""])
def test_a_run_id_that_is_no_ascii_number_in_range_names_no_run(ready: dict[str, Any], subject_id: str) -> None:
    assert _run(subject_id) is None
    before = Entry.objects.count()
    with pytest.raises(DomainError, match="no fine_tune_run") as caught:
        approval_request_submit(
            actor=ready["ml_engineer"], subject_type="fine_tune_run", subject_id=subject_id,
            action="fine_tune_run.execute",
        )  # fmt: skip
    assert caught.value.status_code == 404 and Entry.objects.count() == before
