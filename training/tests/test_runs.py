"""Fine-tune runs in process: bad input, quotas, approvals bound to the digest, the checks when a
run starts, devices, cancellation, duplicate delivery and the reaper. Training really runs (the
tiny model, in a child process) where a test needs it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import ApprovalRequest
from registry.models import ModelVersion
from training.launch import launch_command
from training.models import FineTuneRun, RunState
from training.services import (
    fine_tune_run_cancel,
    fine_tune_run_digest,
    fine_tune_run_execute,
    fine_tune_run_start,
    fine_tune_runs_reap,
    fine_tune_workdirs_sweep,
    gpu_quota_set,
    gpu_usage,
)
from training.tests.conftest import approve_run, request_run, run_actions, run_payload


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hyperparameters": {"learning_rate": 0, "batch_size": 4, "max_steps": 5}}, "learning_rate"),
        ({"hyperparameters": {"learning_rate": -1e-3, "batch_size": 4, "max_steps": 5}}, "learning_rate"),
        ({"hyperparameters": {"learning_rate": 1e-3, "batch_size": 41, "max_steps": 5}}, "batch_size"),
        ({"hyperparameters": {"learning_rate": 1e-3, "batch_size": 4}}, "max_steps"),
        ({"hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 5, "momentum": 1}}, "momentum"),
        ({"hyperparameters": {"learning_rate": "fast", "batch_size": 4, "max_steps": 5}}, "learning_rate"),
        ({"gpu_type": "tpu-v9", "gpu_count": 1, "gpu_hours_estimate": 1}, "gpu_type"),
        ({"gpu_type": "h100", "gpu_count": 99, "gpu_hours_estimate": 1}, "gpu_count"),
        ({"text_field": "prompt"}, "text_field"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    ready: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=field) as caught:
        request_run(ready, **overrides)
    assert caught.value.status_code == 400
    assert FineTuneRun.objects.count() == 0
    assert Entry.objects.count() == before


def test_only_ml_engineers_request_runs(ready: dict[str, Any]) -> None:
    with pytest.raises(PermissionDenied):
        request_run(ready, actor=ready["data_steward"])


def test_gpu_quota_refuses_what_would_exceed_it_and_frees_on_cancel(ready: dict[str, Any]) -> None:
    gpu = {"gpu_type": "h100", "gpu_count": 1, "gpu_hours_estimate": 6}
    with pytest.raises(Conflict, match="quota") as caught:
        request_run(ready, **gpu)  # no quota set: the default is 0 GPU-hours
    assert caught.value.code == "quota_exceeded"
    with pytest.raises(PermissionDenied):
        gpu_quota_set(actor=ready["ml_engineer"], project=ready["project"], gpu_hours=10, reason="more")
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=10, reason="pilot")
    first = request_run(ready, **gpu)
    assert gpu_usage(ready["project"])["requested"] == 6
    with pytest.raises(Conflict, match=r"6\.00 GPU-hours would exceed .* 10\.00 in all, 6\.00 requested"):
        request_run(ready, **gpu)
    assert FineTuneRun.objects.count() == 1
    fine_tune_run_cancel(actor=ready["ml_engineer"], run=first, reason="not needed")
    assert gpu_usage(ready["project"])["available"] == 10
    request_run(ready, **gpu)


def test_a_multi_gpu_run_needs_a_platform_admin_too(ready: dict[str, Any]) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=100, reason="pilot")
    run = request_run(ready, gpu_type="a100", gpu_count=4, gpu_hours_estimate=20)
    approve_run(ready, run)
    request = ApprovalRequest.objects.get(subject_type="fine_tune_run")
    assert [slot["role"] for slot in request.rule["approvals"]] == ["ml_engineer", "platform_admin"]
    assert [d.approver.username for d in request.decisions.all()] == ["ml-engineer-2", "platform-admin"]
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.queue == "gpu"


def test_approval_binds_to_the_digest_and_queues_the_run(ready: dict[str, Any]) -> None:
    from registry.services import dataset_version_review
    from registry.tests.conftest import make_dataset
    from training.tests.conftest import PATTERN_ONLY, TEXTS

    # A version with personal data, reviewed (confirmed) and approved for training.
    dataset = make_dataset(ready, slug="contacts")
    with override_settings(**PATTERN_ONLY):
        from registry.models import PiiScan
        from registry.services import dataset_version_upload, pii_scan_run

        data = "".join(json.dumps({"text": t}) + "\n" for t in [*TEXTS, "write to ana@example.org"]).encode()
        version, _ = dataset_version_upload(actor=ready["ml_engineer"], dataset=dataset, filename="c.jsonl", data=data)
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=ready["system"])
    version.refresh_from_db()
    dataset_version_review(actor=ready["data_steward"], version=version, decision="confirmed", note="contract")
    from governance.services import approval_request_decide, approval_request_submit

    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    # Personal data makes it high risk: the compliance officer's slot too.
    approval_request_decide(actor=ready["compliance_officer"], request_id=request.pk, decision="approve", reason="ok")

    version.refresh_from_db()
    run = request_run(ready, dataset_versions=[version])
    digest = fine_tune_run_digest(run)
    run = approve_run(ready, run)
    assert run.state == RunState.QUEUED and run.queue == "cpu" and run.idempotency_key is not None
    assert run_actions(run) == [
        "fine_tune_run.requested", "approval.requested", "approval.approved", "fine_tune_run.queued"
    ]  # fmt: skip
    assert ApprovalRequest.objects.get(subject_type="fine_tune_run").subject_digest == digest
    # The steward reviews the version again: its digest, and so the run's, change.
    dataset_version_review(
        actor=ready["data_steward"], version=version, decision="false_positive", note="a test address"
    )
    run.refresh_from_db()
    assert fine_tune_run_digest(run) != digest
    done = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert done.state == RunState.FAILED and "no approval of fine_tune_run.execute holds" in done.failure_reason
    with pytest.raises(Conflict, match="no approval"):
        fine_tune_run_start(actor=ready["ml_engineer"], run=done)


def test_a_run_whose_dataset_lost_its_approval_does_not_train(ready: dict[str, Any]) -> None:
    run = approve_run(ready, request_run(ready))
    ApprovalRequest.objects.filter(subject_type="dataset_version").update(expires_at=timezone.now() - timedelta(1))
    done = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert done is not None and done.state == RunState.FAILED
    assert f"dataset version {ready['version'].pk}" in done.failure_reason
    assert "no approval for dataset_version.use_for_training" in done.failure_reason
    assert done.mlflow_run_id == "" and done.output is None and done.device == ""
    assert run_actions(run)[-2:] == ["fine_tune_run.started", "fine_tune_run.failed"]
    assert run_payload(run, "fine_tune_run.failed")["reason"] == done.failure_reason


def test_a_gpu_run_on_a_worker_without_the_gpu_fails_unless_fallback_is_allowed(ready: dict[str, Any]) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=10, reason="pilot")
    run = approve_run(ready, request_run(ready, gpu_type="h100", gpu_count=1, gpu_hours_estimate=1))
    with override_settings(TRAINING_ALLOW_CPU_FALLBACK=False):
        failed = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert failed.state == RunState.FAILED
    assert "this worker has no 1x h100 (no CUDA device)" in failed.failure_reason
    assert "TRAINING_ALLOW_CPU_FALLBACK" in failed.failure_reason
    run = fine_tune_run_start(actor=ready["ml_engineer"], run=failed)
    assert run.attempt == 2
    with override_settings(TRAINING_ALLOW_CPU_FALLBACK=True):
        done = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert done.state == RunState.SUCCEEDED, done.failure_reason
    assert done.device == "cpu" and done.cpu_fallback and done.gpu_hours_used == 0
    assert run_payload(run, "fine_tune_run.succeeded")["cpu_fallback"] is True
    # Delivered again with the same key: it finds the run claimed, and trains nothing.
    again = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert again is None
    assert run_actions(run).count("fine_tune_run.started") == 2  # one per attempt
    assert ModelVersion.objects.filter(produced_by_runs=run).count() == 1


def test_cancelling_a_queued_run_records_who_and_a_late_delivery_trains_nothing(ready: dict[str, Any]) -> None:
    run = approve_run(ready, request_run(ready))
    cancelled = fine_tune_run_cancel(actor=ready["ml-engineer-2"], run=run, reason="wrong data")
    assert cancelled.state == RunState.CANCELLED and cancelled.cancelled_by == ready["ml-engineer-2"]
    assert fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test") is None
    with pytest.raises(Conflict):
        fine_tune_run_cancel(actor=ready["ml_engineer"], run=run, reason="again")
    with pytest.raises(PermissionDenied):
        fine_tune_run_cancel(actor=ready["auditor"], run=request_run(ready), reason="no")


def test_a_second_cancel_of_a_running_run_is_refused_and_keeps_who_asked_first(ready: dict[str, Any]) -> None:
    run = approve_run(ready, request_run(ready))
    FineTuneRun.objects.filter(pk=run.pk).update(state=RunState.RUNNING, claimed_by="w1:42")  # as a worker leaves it
    asked = fine_tune_run_cancel(actor=ready["ml-engineer-2"], run=run, reason="wrong data")
    assert asked.state == RunState.RUNNING and asked.cancel_requested_by == ready["ml-engineer-2"]
    entries = Entry.objects.count()
    with pytest.raises(Conflict, match="ml-engineer-2 asked to cancel it") as caught:
        fine_tune_run_cancel(actor=ready["ml_engineer"], run=run, reason="again")
    assert caught.value.code == "cancel_already_requested"
    stored = FineTuneRun.objects.get(pk=run.pk)
    assert stored.cancel_requested_by == ready["ml-engineer-2"]
    assert stored.cancel_requested_at == asked.cancel_requested_at
    assert Entry.objects.count() == entries
    assert run_actions(run).count("fine_tune_run.cancel_requested") == 1


def test_the_reaper_fails_runs_whose_worker_stopped_beating(ready: dict[str, Any]) -> None:
    run = approve_run(ready, request_run(ready))
    stale = timezone.now() - timedelta(seconds=10)
    FineTuneRun.objects.filter(pk=run.pk).update(state=RunState.RUNNING, heartbeat_at=stale, claimed_by="w1:42")
    with override_settings(TRAINING_HEARTBEAT_TIMEOUT_S=60):
        assert fine_tune_runs_reap(actor=ready["system"]) == 0
    with override_settings(TRAINING_HEARTBEAT_TIMEOUT_S=5):
        assert fine_tune_runs_reap(actor=ready["system"]) == 1
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.failure_reason.startswith("worker lost: w1:42 sent no heartbeat")
    assert run_payload(run, "fine_tune_run.failed")["reaped"] is True


def _left_behind(folder: Path) -> Path:
    """What a worker killed in the middle of training leaves: nothing of its ``finally`` ran."""
    (folder / "base").mkdir(parents=True)
    (folder / "base" / "model.safetensors").write_bytes(b"base weights")
    (folder / "output").mkdir()
    (folder / "output" / "model.safetensors").write_bytes(b"trained weights")
    (folder / ".output-x1").mkdir()
    (folder / "texts.json").write_text(json.dumps(["Ana Garcia <ana@example.com> asked for a refund"]))
    (folder / "job.json").write_text("{}")
    (folder / "train.log").write_text("step 3\n")
    return folder


def _kept(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_the_sweep_scrubs_folders_that_no_live_attempt_owns(ready: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "training"
    lost, running, succeeded, cancelled = (request_run(ready, name=f"r{i}") for i in range(4))
    FineTuneRun.objects.filter(pk=lost.pk).update(state=RunState.FAILED, attempt=2)
    FineTuneRun.objects.filter(pk=running.pk).update(state=RunState.RUNNING, attempt=3)
    FineTuneRun.objects.filter(pk=succeeded.pk).update(state=RunState.SUCCEEDED, attempt=1)
    FineTuneRun.objects.filter(pk=cancelled.pk).update(state=RunState.CANCELLED, attempt=1)
    folders = {
        "lost": _left_behind(root / f"run-{lost.pk}-2"),
        "running now": _left_behind(root / f"run-{running.pk}-3"),
        "running, earlier attempt": _left_behind(root / f"run-{running.pk}-2"),
        "succeeded": _left_behind(root / f"run-{succeeded.pk}-1"),
        "cancelled": _left_behind(root / f"run-{cancelled.pk}-1"),
        "no such run": _left_behind(root / "run-999999-1"),
        "not a run folder": _left_behind(root / "notes"),
    }
    everything = {"base", "output", ".output-x1", "texts.json", "job.json", "train.log"}
    with override_settings(TRAINING_WORK_ROOT=root):
        assert fine_tune_workdirs_sweep() == 5
        assert fine_tune_workdirs_sweep() == 0  # nothing left to scrub
    assert _kept(folders["running now"]) == _kept(folders["not a run folder"]) == everything
    assert _kept(folders["succeeded"]) == {"output", "job.json", "train.log"}  # the registered output stays
    for name in ("lost", "running, earlier attempt", "cancelled", "no such run"):
        assert _kept(folders[name]) == {"job.json", "train.log"}, name


def test_the_reaper_task_scrubs_the_folder_of_the_run_it_fails(ready: dict[str, Any], tmp_path: Path) -> None:
    from training.tasks import reap

    run = approve_run(ready, request_run(ready))
    stale = timezone.now() - timedelta(seconds=10)
    FineTuneRun.objects.filter(pk=run.pk).update(state=RunState.RUNNING, heartbeat_at=stale, claimed_by="w1:42")
    folder = _left_behind(tmp_path / "training" / f"run-{run.pk}-{run.attempt}")
    with override_settings(TRAINING_WORK_ROOT=tmp_path / "training", TRAINING_HEARTBEAT_TIMEOUT_S=5):
        assert reap() == 1
    assert _kept(folder) == {"job.json", "train.log"}


def test_launch_commands_for_one_device_and_for_several_gpus() -> None:
    work = Path("/w/run-1-1")
    assert launch_command(workdir=work, gpu_count=0, python="py") == ["py", "-m", "training.entry", "/w/run-1-1"]
    assert launch_command(workdir=work, gpu_count=1, python="py") == ["py", "-m", "training.entry", "/w/run-1-1"]
    assert launch_command(workdir=work, gpu_count=4, launcher="torchrun", python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
        "-m", "training.entry", "/w/run-1-1",
    ]  # fmt: skip
    assert launch_command(workdir=work, gpu_count=2, launcher="accelerate", python="py") == [
        "py", "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
        "-m", "training.entry", "/w/run-1-1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown launcher"):
        launch_command(workdir=work, gpu_count=2, launcher="mpirun", python="py")
