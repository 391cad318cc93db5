"""Execution of a fine-tune run, in the worker: the claim of a queued run, the checks before it
trains, training in a child process watched for heartbeats, progress and cancellation, tracked in
MLflow, and the record of the attempt's end. A test that replaces ``_train`` or
``launch_command`` replaces it here."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import DomainError
from common.tracking import mlflow_client, project_experiment_id
from governance.permissions import SYSTEM_USERNAME
from governance.services import approval_holds
from registry.services import dataset_version_digest, model_version_materialise, model_version_register_folder
from training.engine import TrainingCancelled
from training.launch import launch_command
from training.models import FineTuneRun, RunState
from training.rules import ACTION, datasets_approved, fine_tune_run_digest
from training.services.runs import _examples, _subject
from training.services.workdirs import _workdir, _workdir_scrub

logger = logging.getLogger(__name__)


MILESTONES = (25, 50, 75)  # per cent of the steps; each reached one is a ledger entry


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def code_version() -> str:
    """The service's commit (``GOV_CODE_VERSION``, else the checkout's HEAD) and the training
    libraries' versions."""
    from importlib.metadata import version

    commit = os.environ.get("GOV_CODE_VERSION", "")
    head = Path(settings.BASE_DIR) / ".git" / "HEAD"
    if not commit and head.is_file():
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = head.parent / ref[5:]
            commit = ref_file.read_text().strip() if ref_file.is_file() else ""
        else:
            commit = ref
    return f"{commit[:12] or 'unknown'} torch-{version('torch')} transformers-{version('transformers')}"


def resolve_device(gpu_type: str, gpu_count: int) -> tuple[str | None, bool, str]:
    """``(device, cpu_fallback, note)``: where a run may train on this worker, or ``None`` with
    the reason it may not."""
    if gpu_count == 0:
        return "cpu", False, "a CPU run"
    import torch

    if not torch.cuda.is_available():
        found = "no CUDA device"
    else:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        matching = [n for n in names if gpu_type in n.lower()]
        if len(matching) >= gpu_count:
            return "cuda", False, f"{gpu_count}x {matching[0]}"
        found = f"{len(matching)} of {gpu_count} {gpu_type} among {names}"
    if settings.TRAINING_ALLOW_CPU_FALLBACK:
        return "cpu", True, f"asked for {gpu_count}x {gpu_type}, found {found}: trained on CPU (fallback allowed)"
    return (
        None,
        False,
        (
            f"this worker has no {gpu_count}x {gpu_type} ({found}); set TRAINING_ALLOW_CPU_FALLBACK=true to train on "
            "CPU instead"
        ),
    )


def _preflight(run: FineTuneRun) -> str | None:
    """Why the run may not train now, or ``None``: its approval must hold for its digest now, and
    every dataset version must still be approved."""
    if not approval_holds(
        subject_type="fine_tune_run", subject_id=str(run.pk), action=ACTION, digest=fine_tune_run_digest(run)
    ):
        return f"no approval of {ACTION} holds for the run as it is now (its digest changed, or it was revoked)"
    holds, detail = datasets_approved(run)
    return None if holds else detail


class ClaimLost(Exception):
    """This worker's attempt is no longer the run's: the reaper failed it, or it was started again."""


def _ours(run: FineTuneRun) -> Any:
    """The run's row while this worker's attempt still holds it (``running``, its claim, its
    attempt): every write of the worker goes through it, so a worker the reaper gave up on, or
    whose run was started again, cannot overwrite what was recorded since."""
    return FineTuneRun.objects.filter(pk=run.pk, state=RunState.RUNNING, claimed_by=run.claimed_by, attempt=run.attempt)


def _claim_lost(run: FineTuneRun, doing: str) -> None:
    logger.warning(
        "run %s attempt %s: worker %s no longer holds it (reaped or started again); %s",
        run.pk, run.attempt, run.claimed_by, doing,
    )  # fmt: skip


def _finish(run: FineTuneRun, state: str, *, reason: str = "", actor: Any = None, **fields: Any) -> FineTuneRun | None:
    """Record the attempt's end, only while this worker's attempt still holds the run; else log a
    warning, record nothing and return ``None``. ``gpu_hours_used`` adds this attempt's hours to
    those of the run's earlier attempts."""
    now = timezone.now()
    with transaction.atomic():
        current = _ours(run).select_for_update().first()
        if current is None:
            _claim_lost(run, f"its end ({state}) is not recorded")
            return None
        run = current
        hours = Decimal(0)
        if run.started_at and run.gpu_count and run.device == "cuda":
            hours = Decimal(run.gpu_count * (now - run.started_at).total_seconds() / 3600).quantize(Decimal("0.0001"))
        run.state, run.finished_at, run.failure_reason = state, now, reason
        run.gpu_hours_used = (run.gpu_hours_used or Decimal(0)) + hours
        for name, value in fields.items():
            setattr(run, name, value)
        if state == RunState.CANCELLED:
            run.cancelled_by = run.cancel_requested_by
        run.save()
        ledger_append(
            actor=actor or _system(), action=f"fine_tune_run.{state}", subject=_subject(run),
            payload={"attempt": run.attempt, "reason": reason, "device": run.device, "cpu_fallback": run.cpu_fallback,
                     "gpu_hours_used": str(hours), "gpu_hours_used_all_attempts": str(run.gpu_hours_used),
                     "metrics": run.metrics,
                     "output": run.output.weights_digest if run.output else None,
                     "cancelled_by": run.cancelled_by.get_username() if run.cancelled_by else None},
        )  # fmt: skip
    return run


def fine_tune_run_execute(*, run_id: int, idempotency_key: str, worker: str) -> FineTuneRun | None:
    """Train a queued run, once: the delivery that claims it (state ``queued`` and this key, by a
    conditional update) trains; any other delivery returns ``None`` and changes nothing."""
    system = _system()
    now = timezone.now()
    with transaction.atomic():
        claimed = FineTuneRun.objects.filter(pk=run_id, idempotency_key=idempotency_key, state=RunState.QUEUED).update(
            state=RunState.RUNNING, claimed_by=worker, started_at=now, heartbeat_at=now, code_version=code_version()
        )
        if not claimed:
            logger.info("run %s: delivery with key %s found it taken or closed; nothing done", run_id, idempotency_key)
            return None
        run = FineTuneRun.objects.select_related("project", "base__model__project").get(pk=run_id)
        ledger_append(
            actor=system, action="fine_tune_run.started", subject=_subject(run),
            payload={"attempt": run.attempt, "worker": worker, "idempotency_key": idempotency_key,
                     "code_version": run.code_version},
        )  # fmt: skip
    reason = _preflight(run)
    if reason:
        return _finish(run, RunState.FAILED, reason=reason)
    device, fallback, note = resolve_device(run.gpu_type, run.gpu_count)
    if device is None:
        return _finish(run, RunState.FAILED, reason=note)
    if not _ours(run).update(device=device, cpu_fallback=fallback):
        _claim_lost(run, "it does not train")
        return None
    run.device, run.cpu_fallback = device, fallback
    workdir = _workdir(run.pk, run.attempt)
    registered = False
    try:
        try:
            result, mlflow_run_id = _train(run, workdir, device, note)
        except TrainingCancelled:
            return _finish(run, RunState.CANCELLED, reason="cancelled", actor=run.cancel_requested_by)
        except ClaimLost:
            return None  # logged; the attempt that holds the run records its end
        except Exception as exc:  # the run fails with the reason; the worker lives on
            logger.exception("run %s failed", run.pk)
            return _finish(run, RunState.FAILED, reason=f"training failed: {exc}")
        if not _ours(run).exists():
            # Weights of an attempt given up on are not registered; ``finally`` scrubs them.
            _claim_lost(run, "its output is not registered")
            return None
        versions = sorted(run.dataset_versions.all(), key=lambda v: v.pk)
        try:
            # Registration checks the dataset versions again: one erased or no longer usable
            # during training refuses the output, and the run fails on record saying why.
            output, _ = model_version_register_folder(
                actor=system, model=run.base.model, folder=str(workdir / "output"), base=run.base,
                dataset_versions=versions, allowed_roots=[Path(settings.TRAINING_WORK_ROOT).resolve()],
                lineage={"fine_tune_run": run.pk, "attempt": run.attempt, "mlflow_run_id": mlflow_run_id,
                         "code_version": run.code_version, "run_digest": fine_tune_run_digest(run),
                         "dataset_versions": [dataset_version_digest(v) for v in versions], "device": device},
            )  # fmt: skip
        except Exception as exc:
            if not isinstance(exc, DomainError):
                logger.exception("run %s: registering its output failed", run.pk)
            message = exc.message if isinstance(exc, DomainError) else str(exc)
            return _finish(
                run, RunState.FAILED, reason=f"registering the output failed: {message}", mlflow_run_id=mlflow_run_id
            )
        registered = True
        _mlflow_log_output(mlflow_run_id, workdir / "output")
        metrics = {"final_loss": result["final_loss"], "steps": result["steps"], "seconds": result["seconds"],
                   **result.get("rewards", {})}  # fmt: skip
        return _finish(run, RunState.SUCCEEDED, output=output, metrics=metrics, mlflow_run_id=mlflow_run_id)
    finally:
        _workdir_scrub(workdir, keep_output=registered)


def _train(run: FineTuneRun, workdir: Path, device: str, note: str) -> tuple[dict[str, Any], str]:
    """Materialise the inputs, train in a child process (``training.entry``, through torchrun or
    accelerate for several GPUs), beat the heartbeat, watch for cancellation, and track it all in
    MLflow. Returns the engine's result and the MLflow run id."""
    if workdir.exists():
        shutil.rmtree(workdir)
    model_version_materialise(run.base, workdir / "base")
    versions = sorted(run.dataset_versions.all(), key=lambda v: v.pk)
    texts = _examples(versions, run.text_field, run.prompt_template, method=run.hyperparameters.get("method", "full"))
    (workdir / "texts.json").write_text(json.dumps(texts))
    job = {"hyperparameters": run.hyperparameters, "device": device}
    (workdir / "job.json").write_text(json.dumps(job))

    client = mlflow_client()
    experiment_id = project_experiment_id(client, run.project.slug)
    mlflow_run = client.create_run(
        experiment_id, run_name=f"fine-tune {run.pk}.{run.attempt}: {run.name}",
        tags={"governance.fine_tune_run": str(run.pk), "governance.run_digest": fine_tune_run_digest(run)},
    )  # fmt: skip
    mlflow_id = mlflow_run.info.run_id
    _ours(run).update(mlflow_run_id=mlflow_id)
    params = {f"hp.{k}": v for k, v in run.hyperparameters.items()}
    params.update(
        base_weights=run.base.weights_digest, examples=len(texts), device=device, device_note=note,
        code_version=run.code_version, gpu_type=run.gpu_type or "none", gpu_count=run.gpu_count,
        dataset_versions=",".join(dataset_version_digest(v) for v in versions),
    )  # fmt: skip
    for key, value in params.items():
        client.log_param(mlflow_id, key, str(value)[:6000])
    try:
        result = _watch(run, launch_command(workdir=workdir, gpu_count=run.gpu_count), workdir, client, mlflow_id)
    except BaseException:
        client.set_terminated(mlflow_id, status="FAILED")
        raise
    shutil.rmtree(workdir / "base", ignore_errors=True)  # the base stays in the artifact store
    client.log_metric(mlflow_id, "final_loss", result["final_loss"])
    client.set_terminated(mlflow_id)
    return result, mlflow_id


def _mlflow_log_output(mlflow_run_id: str, output: Path) -> None:
    """Copy the registered output's files into the MLflow run's artifacts (``model/``). Only after
    registration: weights the registry refused (trained on records erased meanwhile) must not
    stay in MLflow's store. The registered version's source is the folder itself, so a failure
    here is logged and the run still succeeds."""
    client = mlflow_client()
    try:
        client.log_artifacts(mlflow_run_id, str(output), artifact_path="model")
    except Exception:
        logger.exception("MLflow run %s: logging the registered output as artifacts failed", mlflow_run_id)


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the worker process dies (Linux)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _watch(run: FineTuneRun, command: list[str], workdir: Path, client: Any, mlflow_id: str) -> dict[str, Any]:
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    log = (workdir / "train.log").open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        command, cwd=settings.BASE_DIR, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
        preexec_fn=_die_with_parent,
    )  # fmt: skip

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                events.put(json.loads(line))
        events.put(None)

    threading.Thread(target=read, daemon=True).start()
    result: dict[str, Any] | None = None
    reached: set[int] = set()
    last_beat = 0.0
    progress: dict[str, Any] = {}
    rewards: dict[str, float] = {}  # a DPO run's last step's rewards (TRL's rewards/*)
    system = _system()
    try:
        while True:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                event = {}
            if event is None:
                break
            if event.get("event") == "step":
                progress = {k: event[k] for k in ("step", "total_steps", "loss", "learning_rate") if k in event}
                client.log_metric(mlflow_id, "loss", event["loss"], step=event["step"])
                rewards = {k: float(v) for k, v in event.items() if k.startswith("rewards/")}
                for key, value in rewards.items():
                    client.log_metric(mlflow_id, key, value, step=event["step"])
                percent = int(100 * event["step"] / max(1, event["total_steps"]))
                for milestone in MILESTONES:
                    if percent >= milestone and milestone not in reached:
                        reached.add(milestone)
                        if not _ours(run).exists():  # ``finally`` kills the training process
                            _claim_lost(run, "its training process is stopped")
                            raise ClaimLost()
                        ledger_append(
                            actor=system, action="fine_tune_run.progress", subject=_subject(run),
                            payload={"percent": milestone, **progress},
                        )  # fmt: skip
            elif event.get("event") == "done":
                result = {**event, "rewards": rewards}
            if time.monotonic() - last_beat >= 1.0 or event.get("event") == "done":
                last_beat = time.monotonic()
                if not _ours(run).update(heartbeat_at=timezone.now(), progress=progress):
                    _claim_lost(run, "its training process is stopped")
                    proc.terminate()
                    proc.wait(timeout=60)
                    raise ClaimLost()
                if FineTuneRun.objects.filter(pk=run.pk, cancel_requested_at__isnull=False).exists():
                    proc.terminate()
                    proc.wait(timeout=60)
                    run.refresh_from_db(fields=["cancel_requested_by"])
                    raise TrainingCancelled()
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if code != 0 or result is None:
        tail = (workdir / "train.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the training process exited with {code}: {' | '.join(tail) or 'no output'}")
    return result
