"""Starting a failed GPU run again is checked against the GPU
quota, the GPU-hours of earlier attempts are kept, and a worker whose attempt was given up on (the
reaper failed the run, or it was started again) records nothing over what happened since.

Some tests replace ``_train`` with a stub that lets the reaper (and a restart) run while the run
is "training": the stub stands in for the child process only; the services under test, the reaper
and ``fine_tune_run_execute`` run for real. The heartbeat test trains for real (the tiny model)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from common.errors import Conflict
from registry.models import ModelVersion
from training.models import FineTuneRun, RunState
from training.services import (
    execution,
    fine_tune_run_execute,
    fine_tune_run_start,
    fine_tune_runs_reap,
    gpu_quota_set,
    gpu_usage,
)
from training.tests.conftest import approve_run, request_run, run_actions, run_payload

pytestmark = pytest.mark.django_db
GPU = {"gpu_type": "h100", "gpu_count": 1}


def _reap_now(ready: dict[str, Any], run: FineTuneRun) -> None:
    """The worker of ``run`` stalls: its heartbeat is an hour old, and the reaper fails the run."""
    FineTuneRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    with override_settings(TRAINING_HEARTBEAT_TIMEOUT_S=5):
        assert fine_tune_runs_reap(actor=ready["system"]) == 1


def _stub_train(ready: dict[str, Any], *, then: str) -> Any:
    def train(run: FineTuneRun, workdir: Path, device: str, note: str) -> Any:
        _reap_now(ready, run)
        if then == "restart":
            fine_tune_run_start(actor=ready["ml_engineer"], run=FineTuneRun.objects.get(pk=run.pk))
        if then == "raise":
            raise RuntimeError("the old worker's training broke")
        (workdir / "output").mkdir(parents=True, exist_ok=True)
        (workdir / "output" / "w.bin").write_bytes(b"weights-" + str(run.pk).encode())
        return {"final_loss": 1.0, "steps": 1, "seconds": 1.0}, "no-mlflow"

    return train


def _execute(run: FineTuneRun, worker: str = "w1") -> FineTuneRun | None:
    run.refresh_from_db()
    return fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker=worker)


# --- 4. Quota on restart, hours of every attempt ---------------------------------------------------


def test_starting_a_failed_gpu_run_again_is_checked_against_the_quota(ready: dict[str, Any]) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=10, reason="pilot")
    a = approve_run(ready, request_run(ready, gpu_hours_estimate=6, **GPU))
    assert a.state == RunState.QUEUED
    with override_settings(TRAINING_ALLOW_CPU_FALLBACK=False):
        failed = _execute(a)  # no such GPU here: the attempt fails on record
    assert failed is not None and failed.state == RunState.FAILED
    request_run(ready, gpu_hours_estimate=10, **GPU)  # A's 6 hours are free again: 10 fit
    entries = Entry.objects.count()
    with pytest.raises(Conflict) as caught:
        fine_tune_run_start(actor=ready["ml_engineer"], run=FineTuneRun.objects.get(pk=a.pk))
    assert caught.value.code == "quota_exceeded" and caught.value.status_code == 409
    assert caught.value.message == (
        f"6.00 GPU-hours would exceed the GPU quota of {ready['project'].slug}: 10.00 in all, "
        "10.00 requested by open runs, 0.00 used, 0.00 left"
    )
    assert FineTuneRun.objects.get(pk=a.pk).state == RunState.FAILED and Entry.objects.count() == entries
    assert gpu_usage(ready["project"])["available"] == Decimal("0.00")


def test_gpu_hours_of_earlier_attempts_are_kept(ready: dict[str, Any]) -> None:
    """Two attempts of one GPU run each record their hours; the run's total is their sum. The
    attempts' device is set as a worker with the GPU sets it (this machine may have none)."""
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=100, reason="pilot")
    run = approve_run(ready, request_run(ready, gpu_hours_estimate=6, **GPU))
    hours = []
    for attempt in (1, 2):
        run.refresh_from_db()
        assert run.attempt == attempt
        claimed = FineTuneRun.objects.filter(pk=run.pk, state=RunState.QUEUED).update(
            state=RunState.RUNNING, claimed_by="gpu-worker", device="cuda",
            started_at=timezone.now() - timedelta(hours=attempt),
        )  # fmt: skip
        assert claimed == 1
        done = execution._finish(FineTuneRun.objects.get(pk=run.pk), RunState.FAILED, reason="oom")
        assert done is not None and done.state == RunState.FAILED
        hours.append(Decimal(run_payload(run, "fine_tune_run.failed")["gpu_hours_used"]))
        if attempt == 1:
            fine_tune_run_start(actor=ready["ml_engineer"], run=done)
            run.refresh_from_db()
            assert run.gpu_hours_used == hours[0]  # the queued attempt keeps the first one's hours
            assert gpu_usage(ready["project"])["used"] == hours[0].quantize(Decimal("0.01"))
    run.refresh_from_db()
    assert hours[0] >= Decimal(1) and hours[1] >= Decimal(2)
    assert run.gpu_hours_used == hours[0] + hours[1]
    assert Decimal(run_payload(run, "fine_tune_run.failed")["gpu_hours_used_all_attempts"]) == run.gpu_hours_used
    assert gpu_usage(ready["project"])["used"] == run.gpu_hours_used.quantize(Decimal("0.01"))


# --- 5. A worker given up on records nothing ------------------------------------------------------


def test_a_reaped_run_stays_failed_when_its_old_worker_finishes(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = approve_run(ready, request_run(ready))
    monkeypatch.setattr(execution, "_train", _stub_train(ready, then="succeed"))
    models_before = ModelVersion.objects.count()
    assert _execute(run) is None
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.failure_reason.startswith("worker lost")
    assert run_actions(run)[-1] == "fine_tune_run.failed" and "fine_tune_run.succeeded" not in run_actions(run)
    assert run.output is None and ModelVersion.objects.count() == models_before  # its weights not registered
    workdir = Path(settings.TRAINING_WORK_ROOT) / f"run-{run.pk}-{run.attempt}"
    assert not (workdir / "output").exists()  # and scrubbed


def test_a_reaped_run_whose_old_worker_then_fails_keeps_the_reapers_reason(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = approve_run(ready, request_run(ready))
    monkeypatch.setattr(execution, "_train", _stub_train(ready, then="raise"))
    assert _execute(run) is None
    run.refresh_from_db()
    assert run.failure_reason.startswith("worker lost")
    assert run_actions(run).count("fine_tune_run.failed") == 1


def test_a_run_started_again_is_not_overwritten_by_its_old_worker(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = approve_run(ready, request_run(ready))
    monkeypatch.setattr(execution, "_train", _stub_train(ready, then="restart"))
    models_before = ModelVersion.objects.count()
    assert _execute(run) is None
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.attempt == 2
    assert run_actions(run)[-2:] == ["fine_tune_run.failed", "fine_tune_run.queued"]
    assert ModelVersion.objects.count() == models_before


def test_a_reaped_worker_stops_training_at_its_next_heartbeat(
    ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real training: the reaper fails the run as its training process starts; the worker's first
    heartbeat finds the run no longer its own, stops the process and records nothing."""
    run = approve_run(ready, request_run(ready))
    launch = execution.launch_command

    def reap_then_launch(**kwargs: Any) -> list[str]:
        _reap_now(ready, FineTuneRun.objects.get(pk=run.pk))
        return launch(**kwargs)

    monkeypatch.setattr(execution, "launch_command", reap_then_launch)
    assert _execute(run) is None
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.heartbeat_at < timezone.now() - timedelta(minutes=30)
    assert run.progress == {} and run.output is None
    assert run_actions(run)[-1] == "fine_tune_run.failed"
    assert "fine_tune_run.progress" not in run_actions(run) and "fine_tune_run.succeeded" not in run_actions(run)
