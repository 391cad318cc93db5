"""Optimisation run requests and their governance, in process (no worker, no quantisation): bad
input refused naming the field with nothing changed, the request's ledger entry, the evaluation
set's approval as the policy's evidence, the approval that queues the run, and the deployment
evidence of a version that is not quantised. The quantisation itself, through the real worker, is
in ``test_optimisation_worker``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from governance.services import approval_request_decide, approval_request_submit
from registry.services import dataset_version_digest
from training.models import OptimisationRun, RunState
from training.services import (
    fine_tune_workdirs_sweep,
    optimisation_run_cancel,
    optimisation_run_digest,
    optimisation_run_execute,
    optimisation_run_request,
    optimisation_runs_reap,
    quantisation_within_bounds,
)
from training.tests.optimising import actions, evaluation_set, payload

pytestmark = pytest.mark.django_db


def _request(ready: dict[str, Any], **overrides: Any) -> OptimisationRun:
    arguments: dict[str, Any] = {
        "actor": ready["ml_engineer"], "project": ready["project"], "source": ready["base"],
        "evaluation_set": ready["evaluation"],
    }  # fmt: skip
    arguments.update(overrides)
    return optimisation_run_request(**arguments)


@pytest.fixture
def with_evaluation(ready: dict[str, Any]) -> dict[str, Any]:
    return {**ready, "evaluation": evaluation_set(ready)}


def test_a_request_is_recorded_on_the_ledger(with_evaluation: dict[str, Any]) -> None:
    run = _request(with_evaluation)
    assert run.state == RunState.REQUESTED and run.method == "onnx_dynamic_int8"
    assert actions(run) == ["optimisation_run.requested"]
    entry = payload(run, "optimisation_run.requested")
    assert entry["source"] == with_evaluation["base"].weights_digest and entry["records"] == 12
    assert entry["evaluation_set"] == dataset_version_digest(with_evaluation["evaluation"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "gguf_q4"}, "method"),
        ({"max_length": 1}, "max_length"),
        ({"max_length": 10**6}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"text_field": "answer"}, "text_field"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    with_evaluation: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(DomainError) as refused:
        _request(with_evaluation, **overrides)
    assert refused.value.code == "invalid_input" and field in refused.value.fields
    assert not OptimisationRun.objects.exists()


def test_an_onnx_export_or_another_project_is_no_source(
    with_evaluation: dict[str, Any], elsewhere: Any, tmp_path: Path
) -> None:
    from django.test import override_settings

    from registry.services import model_version_register_folder

    folder = tmp_path / "exports" / "int8"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"an export")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "exports").resolve()]):
        export, _ = model_version_register_folder(
            actor=with_evaluation["ml_engineer"], model=with_evaluation["base"].model, folder=str(folder)
        )
    with pytest.raises(DomainError, match="is an ONNX export already"):
        _request(with_evaluation, source=export)
    with pytest.raises(DomainError, match=r"source: model version .* belongs to another project"):
        _request(with_evaluation, source=elsewhere["model_version"])
    with pytest.raises(DomainError, match=r"evaluation_set: dataset version .* belongs to another project"):
        _request(with_evaluation, evaluation_set=elsewhere["dataset_version"])
    assert not OptimisationRun.objects.exists()


def test_only_ml_engineers_request(with_evaluation: dict[str, Any]) -> None:
    with pytest.raises(PermissionDenied):
        _request(with_evaluation, actor=with_evaluation["auditor"])
    assert not OptimisationRun.objects.exists()


def test_an_evaluation_set_not_approved_for_evaluation_holds_the_run_back(ready: dict[str, Any]) -> None:
    run = _request({**ready, "evaluation": evaluation_set(ready, approved=False)})
    with pytest.raises(DomainError, match="evaluation_set_approved") as refused:
        request = approval_request_submit(
            actor=ready["ml_engineer"], subject_type="optimisation_run", subject_id=str(run.pk),
            action="optimisation_run.execute",
        )  # fmt: skip
        approval_request_decide(actor=ready["ml-engineer-2"], request_id=request.pk, decision="approve", reason="ok")
    assert "dataset_version.use_for_evaluation" in refused.value.message
    run.refresh_from_db()
    assert run.state == RunState.REQUESTED and actions(run) == ["optimisation_run.requested"]


def test_an_approval_queues_the_run_for_its_digest(with_evaluation: dict[str, Any]) -> None:
    from governance.services import approval_holds

    run = _request(with_evaluation)
    request = approval_request_submit(
        actor=with_evaluation["ml_engineer"], subject_type="optimisation_run", subject_id=str(run.pk),
        action="optimisation_run.execute",
    )  # fmt: skip
    with pytest.raises(DomainError):  # the requester never approves its own run
        approval_request_decide(
            actor=with_evaluation["ml_engineer"], request_id=request.pk, decision="approve", reason="mine"
        )
    approval_request_decide(
        actor=with_evaluation["ml-engineer-2"], request_id=request.pk, decision="approve", reason="ok"
    )
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.attempt == 1 and run.idempotency_key is not None
    assert actions(run) == ["optimisation_run.requested", "optimisation_run.queued"]
    assert payload(run, "optimisation_run.queued")["idempotency_key"] == str(run.idempotency_key)
    assert approval_holds(
        subject_type="optimisation_run", subject_id=str(run.pk), action="optimisation_run.execute",
        digest=optimisation_run_digest(run),
    )  # fmt: skip


def test_a_version_no_optimisation_made_meets_any_bound(ready: dict[str, Any]) -> None:
    holds, detail = quantisation_within_bounds(ready["base"], max_perplexity_increase=0.0)
    assert holds and "not a quantised version" in detail


def _cancel_refused(run: OptimisationRun, actor: Any, error: type[Exception], match: str, reason: str = "no") -> None:
    before = Entry.objects.count()
    with pytest.raises(error, match=match):
        optimisation_run_cancel(actor=actor, run=run, reason=reason)
    assert Entry.objects.count() == before


def test_a_run_no_worker_started_is_cancelled_with_a_reason_and_a_running_one_is_not(
    with_evaluation: dict[str, Any],
) -> None:
    ready = with_evaluation
    requested, queued, running, done = (_request(ready) for _ in range(4))
    key = OptimisationRun.new_idempotency_key()
    OptimisationRun.objects.filter(pk=queued.pk).update(state=RunState.QUEUED, attempt=1, idempotency_key=key)
    OptimisationRun.objects.filter(pk=running.pk).update(state=RunState.RUNNING, attempt=1, claimed_by="host:1")
    OptimisationRun.objects.filter(pk=done.pk).update(state=RunState.SUCCEEDED, attempt=1)
    _cancel_refused(requested, ready["auditor"], PermissionDenied, "cancelling needs the requester")
    _cancel_refused(requested, ready["ml_engineer"], DomainError, "reason: may not be blank", reason="  ")
    _cancel_refused(running, ready["ml_engineer"], DomainError, "is running on host:1 and cannot be stopped")
    _cancel_refused(done, ready["ml_engineer"], DomainError, "is succeeded")
    for run, actor in ((requested, ready["ml_engineer"]), (queued, ready["platform-admin"])):
        run.refresh_from_db()
        cancelled = optimisation_run_cancel(actor=actor, run=run, reason="the source is being retrained")
        assert cancelled.state == RunState.CANCELLED and cancelled.finished_at is not None
        assert actions(run)[-1] == "optimisation_run.cancelled"
        assert payload(run, "optimisation_run.cancelled") == {
            "attempt": run.attempt,
            "reason": "the source is being retrained",
        }
    _cancel_refused(requested, ready["ml_engineer"], DomainError, "is cancelled")
    # The queued run's message, delivered now, finds it closed and does nothing.
    assert optimisation_run_execute(run_id=queued.pk, idempotency_key=str(key), worker="w:1") is None
    assert OptimisationRun.objects.get(pk=queued.pk).state == RunState.CANCELLED


def test_the_reaper_fails_a_run_whose_worker_is_gone_or_that_ran_past_its_lease(
    with_evaluation: dict[str, Any],
) -> None:
    import os
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from django.utils import timezone

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = socket.gethostname()
    now = timezone.now()
    dead, alive, slow, elsewhere = (_request(with_evaluation) for _ in range(4))
    for run, claimed_by, started in (
        (dead, f"{here}:{gone.stdout.strip()}", now),  # its process ended: lost at once
        (alive, f"{here}:{os.getpid()}", now - timedelta(seconds=50)),  # alive, within the lease
        (slow, f"{here}:{os.getpid()}", now - timedelta(seconds=120)),  # alive, past the lease
        (elsewhere, "other-host:4242", now - timedelta(seconds=50)),  # cannot be checked: the lease decides
    ):
        OptimisationRun.objects.filter(pk=run.pk).update(
            state=RunState.RUNNING, attempt=1, claimed_by=claimed_by, started_at=started
        )
    with override_settings(OPTIMISATION_RUN_LEASE_S=60):
        assert optimisation_runs_reap(actor=with_evaluation["system"]) == 2
        assert optimisation_runs_reap(actor=with_evaluation["system"]) == 0
    states = dict(
        OptimisationRun.objects.filter(pk__in=[dead.pk, alive.pk, slow.pk, elsewhere.pk]).values_list("pk", "state")
    )
    assert states == {dead.pk: "failed", alive.pk: "running", slow.pk: "failed", elsewhere.pk: "running"}
    dead.refresh_from_db()
    assert dead.failure_reason.startswith(f"worker lost: {here}:{gone.stdout.strip()} started it at")
    assert payload(dead, "optimisation_run.failed")["reaped"] is True
    assert "optimisation_run.failed" not in actions(alive)
    # The ML engineer's home page lists the failed runs, and the live one once past its lease.
    from django.test import Client

    from tests.test_home_page import _home, _panel

    with override_settings(OPTIMISATION_RUN_LEASE_S=3600):
        jobs = _panel(_home(Client(), with_evaluation["ml_engineer"]), "jobs")
    assert jobs is not None and jobs.startswith("Failed or stuck jobs (2)"), jobs
    assert f"Optimisation run: optimisation {dead.pk} of" in jobs and "worker lost" in jobs
    with override_settings(OPTIMISATION_RUN_LEASE_S=30):
        jobs = _panel(_home(Client(), with_evaluation["ml_engineer"]), "jobs")
    assert jobs is not None and jobs.startswith("Failed or stuck jobs (4)"), jobs
    assert f"Optimisation run: optimisation {alive.pk} of" in jobs and "running, no progress for" in jobs


def test_the_sweep_scrubs_optimisation_folders_no_live_attempt_owns(
    with_evaluation: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "training"
    lost, running, succeeded = (_request(with_evaluation) for _ in range(3))
    OptimisationRun.objects.filter(pk=lost.pk).update(state=RunState.FAILED, attempt=1)
    OptimisationRun.objects.filter(pk=running.pk).update(state=RunState.RUNNING, attempt=1)
    OptimisationRun.objects.filter(pk=succeeded.pk).update(state=RunState.SUCCEEDED, attempt=2)
    folders = {name: root / f"optimise-{run.pk}-{attempt}" for name, run, attempt in (
        ("lost", lost, 1), ("running", running, 1), ("succeeded", succeeded, 2), ("earlier", succeeded, 1),
    )}  # fmt: skip
    for folder in folders.values():
        for part in ("source", "fp32", "int8"):
            (folder / part).mkdir(parents=True)
            (folder / part / "model.bin").write_bytes(b"weights")
    with override_settings(TRAINING_WORK_ROOT=root):
        assert fine_tune_workdirs_sweep() == 3
        assert fine_tune_workdirs_sweep() == 0
    kept = {name: sorted(p.name for p in folder.iterdir()) for name, folder in folders.items()}
    assert kept == {"lost": [], "running": ["fp32", "int8", "source"], "succeeded": ["int8"], "earlier": []}
