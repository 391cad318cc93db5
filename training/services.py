"""Writes of the training app: requesting, queueing, executing, cancelling and reaping fine-tune
runs, and GPU quotas. Each checks the actor, changes the rows and appends its ledger entries in one
transaction; execution runs in a Celery task (``training.run``) on the ``gpu`` or ``cpu`` queue.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.digests import canonical_digest
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import SYSTEM_USERNAME, can_administer, is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from registry.models import DatasetVersion, ModelVersion, PromptTemplate
from registry.records import RecordError, read_records
from registry.services import (
    dataset_version_bytes,
    dataset_version_digest,
    model_version_materialise,
    model_version_register_folder,
    use_status,
)
from training import engine
from training.engine import TrainingCancelled
from training.launch import launch_command
from training.models import TERMINAL_STATES, FineTuneRun, GpuQuota, RunState

logger = logging.getLogger(__name__)
ACTION = "fine_tune_run.execute"
DATASET_ACTION = "dataset_version.use_for_training"
MILESTONES = (25, 50, 75)  # per cent of the steps; each reached one is a ledger entry


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


# --- Digest and subject --------------------------------------------------------------------------


def fine_tune_run_digest(run: FineTuneRun) -> str:
    """Everything an approval of the run vouches for: the base weights, the dataset versions as
    they are now (content and review), the prompt template, the hyperparameters and the resources."""
    versions = sorted(run.dataset_versions.all(), key=lambda v: v.pk)
    return canonical_digest(
        {
            "project": run.project.slug,
            "base_weights": run.base.weights_digest,
            "dataset_versions": [dataset_version_digest(v) for v in versions],
            "prompt_template": run.prompt_template.content_digest if run.prompt_template else None,
            "text_field": run.text_field,
            "hyperparameters": run.hyperparameters,
            "resources": {
                "gpu_type": run.gpu_type,
                "gpu_count": run.gpu_count,
                "gpu_hours_estimate": str(run.gpu_hours_estimate),
            },
        }
    )


def _subject(run: FineTuneRun) -> Subject:
    return Subject("fine_tune_run", str(run.pk), fine_tune_run_digest(run))


def resource_tier(run: FineTuneRun) -> str:
    """The policy context of a run's resources: ``cpu``, ``gpu`` (one) or ``multi_gpu``."""
    return "cpu" if run.gpu_count == 0 else ("gpu" if run.gpu_count == 1 else "multi_gpu")


def datasets_approved(run: FineTuneRun) -> tuple[bool, str]:
    """Evidence ``datasets_approved``: every dataset version is usable (personal data reviewed)
    and approved for training as it is now."""
    for version in sorted(run.dataset_versions.all(), key=lambda v: v.pk):
        usable, reason = use_status(version)
        if not usable:
            return False, f"dataset version {version.pk} ({version.dataset} v{version.number}): {reason}"
        if not approval_holds(
            subject_type="dataset_version", subject_id=str(version.pk), action=DATASET_ACTION,
            digest=dataset_version_digest(version),
        ):  # fmt: skip
            return False, (
                f"dataset version {version.pk} ({version.dataset} v{version.number}) has no approval for "
                f"{DATASET_ACTION} that holds for its current digest"
            )
    return True, "every dataset version is approved for training"


# --- GPU quota -----------------------------------------------------------------------------------


def gpu_usage(project: Project) -> dict[str, Decimal]:
    """The project's GPU-hours: quota, requested by open runs (estimates of their current
    attempts), used by the ended attempts of every run (``gpu_hours_used`` adds up each attempt's
    hours, so a run started again keeps the hours its earlier attempts used)."""
    quota = GpuQuota.objects.filter(project=project).values_list("gpu_hours", flat=True).first()
    runs = FineTuneRun.objects.filter(project=project)
    requested = runs.exclude(state__in=TERMINAL_STATES).aggregate(h=Sum("gpu_hours_estimate"))["h"] or Decimal(0)
    used = runs.aggregate(h=Sum("gpu_hours_used"))["h"] or Decimal(0)
    limit = Decimal(quota if quota is not None else settings.TRAINING_DEFAULT_GPU_HOURS)
    cents = Decimal("0.01")
    usage = {"quota": limit, "requested": Decimal(requested), "used": Decimal(used)}
    usage["available"] = usage["quota"] - usage["requested"] - usage["used"]
    return {name: value.quantize(cents) for name, value in usage.items()}


def _lock_quota(project: Project) -> None:
    """Serialise the readers and writers of one project's GPU-hours (PostgreSQL: a row lock on the
    project; SQLite's transactions are serial already): two requests checked against the same
    hours left would both pass."""
    Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).first()


def _check_quota(project: Project, hours: Decimal) -> None:
    """Refuse ``hours`` more GPU-hours when the project has not that many left (409
    ``quota_exceeded``). Locks the project's GPU-hours first: call it inside the transaction that
    then holds them (a run request, or a run queued again)."""
    _lock_quota(project)
    usage = gpu_usage(project)
    if hours > usage["available"]:
        raise Conflict(
            "quota_exceeded",
            f"{hours} GPU-hours would exceed the GPU quota of {project.slug}: {usage['quota']} in all, "
            f"{usage['requested']} requested by open runs, {usage['used']} used, {usage['available']} left",
        )


def gpu_quota_set(*, actor: Any, project: Project, gpu_hours: Any, reason: str) -> GpuQuota:
    """Set a project's GPU-hour quota (its platform admins, or a global admin), with a reason."""
    if not can_administer(actor, project):
        raise PermissionDenied("permission_denied", f"setting the GPU quota of {project.slug} needs platform_admin")
    hours = _decimal("gpu_hours", gpu_hours, minimum=Decimal(0))
    if not reason.strip():
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        _lock_quota(project)
        previous = GpuQuota.objects.filter(project=project).first()
        old = previous.gpu_hours if previous else None
        quota, _ = GpuQuota.objects.update_or_create(
            project=project, defaults={"gpu_hours": hours, "updated_by": actor}
        )
        ledger_append(
            actor=actor, action="gpu_quota.set", subject=Subject("project", str(project.pk)),
            payload={"project": project.slug, "gpu_hours": str(hours),
                     "previous": str(old) if old is not None else None, "reason": reason},
        )  # fmt: skip
    return quota


def _decimal(field: str, value: Any, *, minimum: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(field, f"expected a number, got {value!r}") from None
    if not number.is_finite() or number < minimum:
        raise _invalid(field, f"must be at least {minimum}, got {value}")
    return number.quantize(Decimal("0.01"))


# --- Requests ------------------------------------------------------------------------------------


def _examples(versions: list[DatasetVersion], text_field: str, template: PromptTemplate | None) -> list[str]:
    """The training texts: each record's ``text_field`` (through the prompt template, whose
    ``{field}`` placeholders take the record's fields), in dataset-version order."""
    texts = []
    for version in versions:
        data = dataset_version_bytes(version)
        try:
            for record in read_records(data, version.format):
                value = record.fields.get(text_field, "")
                if not value.strip():
                    continue
                if template is not None and template.kind == "template":
                    body = str(template.body)
                    for name, field_value in record.fields.items():
                        body = body.replace("{" + name + "}", field_value)
                    value = body
                texts.append(value)
        except RecordError as exc:
            raise DomainError("invalid_dataset", f"dataset version {version.pk}: {exc}") from None
    return texts


# name -> (type, default); ``None`` as default: required. ``epochs`` or ``max_steps``, one of them.
HYPERPARAMETERS: dict[str, tuple[type, Any]] = {
    "learning_rate": (float, None),
    "batch_size": (int, None),
    "seed": (int, 0),
    "method": (str, "full"),
    "epochs": (int, "unset"),
    "max_steps": (int, "unset"),
    "lora_r": (int, 8),
    "lora_alpha": (int, 16),
    "max_length": (int, 128),
}


def _hyperparameters(raw: Any) -> engine.Hyperparameters:
    """The engine's hyperparameters from a request's JSON, every field type-checked by name."""
    if not isinstance(raw, dict):
        raise _invalid("hyperparameters", "expected an object")
    unknown = sorted(set(raw) - set(HYPERPARAMETERS))
    if unknown:
        raise _invalid("hyperparameters", f"unknown field(s) {', '.join(unknown)}; known: {', '.join(HYPERPARAMETERS)}")
    values: dict[str, Any] = {}
    for name, (kind, default) in HYPERPARAMETERS.items():
        value = raw.get(name, default)
        if value is None:
            raise _invalid(f"hyperparameters.{name}", "is required")
        if value == "unset" and default == "unset":
            continue
        numeric = kind in (int, float) and not isinstance(value, bool)
        if kind is float and numeric and isinstance(value, int | float):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _invalid(f"hyperparameters.{name}", f"expected {kind.__name__}, got {value!r}")
        values[name] = value
    return engine.Hyperparameters(**values)


def fine_tune_run_request(
    *,
    actor: Any,
    project: Project,
    name: str,
    base: ModelVersion,
    dataset_versions: list[DatasetVersion],
    hyperparameters: dict[str, Any],
    prompt_template: PromptTemplate | None = None,
    text_field: str = "text",
    gpu_type: str = "",
    gpu_count: int = 0,
    gpu_hours_estimate: Any = 0,
) -> FineTuneRun:
    """Record a fine-tune run request (ML engineers). It trains only once a policy's approvals are
    given to its digest; GPU requests count against the project's quota from now on."""
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, project)):
        raise PermissionDenied("permission_denied", f"requesting a fine-tune run needs ml_engineer in {project.slug}")
    if not name.strip():
        raise _invalid("name", "may not be blank")
    if base.model.project_id != project.pk:
        raise _invalid("base", f"model version {base.pk} belongs to another project")
    if not dataset_versions:
        raise _invalid("dataset_versions", "name at least one dataset version")
    for version in dataset_versions:
        if version.dataset.project_id != project.pk:
            raise _invalid("dataset_versions", f"dataset version {version.pk} belongs to another project")
        usable, reason = use_status(version)
        if not usable:
            raise DomainError(
                "dataset_not_usable", f"dataset version {version.pk} may not be used for training: {reason}"
            )
    if prompt_template is not None and prompt_template.project_id != project.pk:
        raise _invalid("prompt_template", f"prompt template {prompt_template.pk} belongs to another project")
    gpu_type = gpu_type.strip().lower()
    if gpu_count < 0 or gpu_count > settings.TRAINING_MAX_GPUS:
        raise _invalid("gpu_count", f"must be between 0 and {settings.TRAINING_MAX_GPUS}, got {gpu_count}")
    if gpu_count and gpu_type not in settings.TRAINING_GPU_TYPES:
        raise _invalid(
            "gpu_type", f"this platform has no GPU type {gpu_type!r}; it has {', '.join(settings.TRAINING_GPU_TYPES)}"
        )
    if not gpu_count and gpu_type:
        raise _invalid("gpu_type", "a GPU type needs a gpu_count of 1 or more")
    hours = _decimal("gpu_hours_estimate", gpu_hours_estimate, minimum=Decimal(0))
    if gpu_count and hours <= 0:
        raise _invalid("gpu_hours_estimate", "a GPU request needs an estimate of its GPU-hours above 0")
    texts = _examples(dataset_versions, text_field, prompt_template)
    if not texts:
        raise _invalid("text_field", f"no record of the dataset versions has a non-empty field {text_field!r}")
    params = _hyperparameters(hyperparameters)
    try:
        params.validate(len(texts))
    except ValueError as exc:
        raise DomainError("invalid_input", f"hyperparameters: {exc}", fields={"hyperparameters": [str(exc)]}) from None
    with transaction.atomic():
        if gpu_count:
            _check_quota(project, hours)
        run = FineTuneRun.objects.create(
            project=project, name=name.strip(), base=base, prompt_template=prompt_template, text_field=text_field,
            hyperparameters=dataclasses.asdict(params), gpu_type=gpu_type, gpu_count=gpu_count,
            gpu_hours_estimate=hours, requested_by=actor,
        )  # fmt: skip
        run.dataset_versions.set(dataset_versions)
        ledger_append(
            actor=actor, action="fine_tune_run.requested", subject=_subject(run),
            payload={"name": run.name, "base": base.weights_digest, "examples": len(texts),
                     "dataset_versions": [dataset_version_digest(v) for v in dataset_versions],
                     "prompt_template": prompt_template.content_digest if prompt_template else None,
                     "hyperparameters": run.hyperparameters,
                     "resources": {"gpu_type": gpu_type, "gpu_count": gpu_count, "gpu_hours_estimate": str(hours)}},
        )  # fmt: skip
    return run


def _queue(run: FineTuneRun, actor: Any, why: str) -> FineTuneRun:
    run.state, run.idempotency_key = RunState.QUEUED, FineTuneRun.new_idempotency_key()
    run.queue = settings.TRAINING_GPU_QUEUE if run.gpu_count else settings.TRAINING_CPU_QUEUE
    run.attempt += 1
    run.queued_at, run.failure_reason, run.progress = timezone.now(), "", {}
    run.save(update_fields=["state", "idempotency_key", "queue", "attempt", "queued_at", "failure_reason", "progress"])
    ledger_append(
        actor=actor, action="fine_tune_run.queued", subject=_subject(run),
        payload={"attempt": run.attempt, "queue": run.queue, "idempotency_key": str(run.idempotency_key), "why": why},
    )  # fmt: skip
    key = str(run.idempotency_key)
    dispatch_on_commit("training.run", args=(run.pk, key), queue=run.queue, task_id=key)
    return run


def on_run_approved(run: FineTuneRun, action: str, actor: Any) -> None:
    """The approval hook: an approved run is queued at once, in the approving transaction."""
    if action == ACTION and run.state == RunState.REQUESTED:
        _queue(run, actor, "approved")


def fine_tune_run_start(*, actor: Any, run: FineTuneRun) -> FineTuneRun:
    """Queue an approved run again after it failed (a new attempt with a new idempotency key). A
    failed run's estimate no longer counts against the GPU quota, so a GPU run is checked against
    it again (409 ``quota_exceeded``): the hours it held may have gone to other runs meanwhile."""
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, run.project)):
        raise PermissionDenied("permission_denied", f"starting a run needs ml_engineer in {run.project.slug}")
    with transaction.atomic():
        if run.gpu_count:
            _lock_quota(run.project)  # before the run's row: the order fine_tune_run_request takes
        run = FineTuneRun.objects.select_for_update().get(pk=run.pk)
        if run.state not in (RunState.REQUESTED, RunState.FAILED):
            raise Conflict("run_not_startable", f"run {run.pk} is {run.state}; only requested or failed runs start")
        if not approval_holds(
            subject_type="fine_tune_run", subject_id=str(run.pk), action=ACTION, digest=fine_tune_run_digest(run)
        ):
            raise Conflict("not_approved", f"no approval of {ACTION} holds for run {run.pk} as it is now")
        if run.gpu_count and run.state in TERMINAL_STATES:  # a requested run's estimate counts already
            _check_quota(run.project, run.gpu_hours_estimate)
        return _queue(run, actor, "started again" if run.attempt else "started")


def fine_tune_run_cancel(*, actor: Any, run: FineTuneRun, reason: str) -> FineTuneRun:
    """Cancel a run: at once when it has not started, else the worker stops it at its next beat."""
    held = project_roles_held(actor, run.project)
    if not (
        is_platform_admin(actor) or actor.pk == run.requested_by_id or held & {Role.ML_ENGINEER, Role.PLATFORM_ADMIN}
    ):
        raise PermissionDenied("permission_denied", "cancelling needs the requester, ml_engineer or platform_admin")
    if not reason.strip():
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        run = FineTuneRun.objects.select_for_update().get(pk=run.pk)
        if run.state in TERMINAL_STATES:
            raise Conflict("run_closed", f"run {run.pk} is {run.state}")
        if run.state == RunState.RUNNING:
            if run.cancel_requested_at is not None:
                # Asked once is enough: a second request would overwrite who asked first.
                raise Conflict(
                    "cancel_already_requested",
                    f"run {run.pk}: {run.cancel_requested_by} asked to cancel it at "
                    f"{run.cancel_requested_at:%Y-%m-%d %H:%M:%S} UTC; the worker stops it at its next beat",
                )
            run.cancel_requested_by, run.cancel_requested_at = actor, timezone.now()
            run.save(update_fields=["cancel_requested_by", "cancel_requested_at"])
            ledger_append(
                actor=actor, action="fine_tune_run.cancel_requested", subject=_subject(run), payload={"reason": reason}
            )
            return run
        run.state, run.cancelled_by, run.finished_at = RunState.CANCELLED, actor, timezone.now()
        run.save(update_fields=["state", "cancelled_by", "finished_at"])
        ledger_append(actor=actor, action="fine_tune_run.cancelled", subject=_subject(run), payload={"reason": reason})
    return run


# --- Execution (in the worker) -------------------------------------------------------------------


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
        metrics = {"final_loss": result["final_loss"], "steps": result["steps"], "seconds": result["seconds"]}
        return _finish(run, RunState.SUCCEEDED, output=output, metrics=metrics, mlflow_run_id=mlflow_run_id)
    finally:
        _workdir_scrub(workdir, keep_output=registered)


_WORKDIR_NAME = re.compile(r"^run-([0-9]+)-([0-9]+)$")


def _workdir(run_id: int, attempt: int) -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / f"run-{run_id}-{attempt}"


def fine_tune_workdirs_sweep() -> int:
    """Scrub the working folders that no live attempt owns: a worker killed outright runs no
    ``finally``, and its attempt's folder keeps the training records (``texts.json``), the base
    weights and the unregistered output. Runs on each worker host (at worker start and with the
    reaper): ``TRAINING_WORK_ROOT`` is local disk. A folder is left alone while its attempt is the
    run's current one and still running; the registered output of a succeeded attempt stays.
    Returns how many folders were scrubbed."""
    root = Path(settings.TRAINING_WORK_ROOT)
    if not root.is_dir():
        return 0
    found = {}
    for folder in root.iterdir():
        match = _WORKDIR_NAME.match(folder.name)
        if match and folder.is_dir():
            found[folder] = (int(match[1]), int(match[2]))
    runs = FineTuneRun.objects.in_bulk({run_id for run_id, _ in found.values()})
    scrubbed = 0
    for folder, (run_id, attempt) in sorted(found.items()):
        run = runs.get(run_id)
        current = run is not None and run.attempt == attempt
        if current and run.state not in TERMINAL_STATES:
            continue
        leftovers = [folder / "texts.json", folder / "base", *folder.glob(".output-*")]
        keep_output = current and run.state == RunState.SUCCEEDED
        if not keep_output:
            leftovers.append(folder / "output")
        if not any(path.exists() for path in leftovers):
            continue
        _workdir_scrub(folder, keep_output=keep_output)
        logger.warning("training folder %s: scrubbed what its stopped attempt left behind", folder)
        scrubbed += 1
    return scrubbed


def _workdir_scrub(workdir: Path, *, keep_output: bool) -> None:
    """Delete the run's working copies of its inputs, whatever the outcome: ``texts.json`` holds
    the full training records (personal data included), which an Art. 17 erasure of the dataset
    version could never reach here; ``base/`` stays in the artifact store. Output that was not
    registered (the run failed or was cancelled) goes too: weights trained on data that may since
    have been erased. The registered output stays (it is the model version's ``source``), and so
    do ``job.json`` (hyperparameters) and ``train.log`` (the child's stderr) for diagnosis. A
    worker killed outright runs no ``finally``: ``fine_tune_workdirs_sweep`` scrubs its folder."""
    (workdir / "texts.json").unlink(missing_ok=True)
    shutil.rmtree(workdir / "base", ignore_errors=True)
    for staging in workdir.glob(".output-*"):  # the engine's staging folder, left by a killed process
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_output:
        shutil.rmtree(workdir / "output", ignore_errors=True)


def _train(run: FineTuneRun, workdir: Path, device: str, note: str) -> tuple[dict[str, Any], str]:
    """Materialise the inputs, train in a child process (``training.entry``, through torchrun or
    accelerate for several GPUs), beat the heartbeat, watch for cancellation, and track it all in
    MLflow. Returns the engine's result and the MLflow run id."""
    from mlflow import MlflowClient

    if workdir.exists():
        shutil.rmtree(workdir)
    model_version_materialise(run.base, workdir / "base")
    versions = sorted(run.dataset_versions.all(), key=lambda v: v.pk)
    texts = _examples(versions, run.text_field, run.prompt_template)
    (workdir / "texts.json").write_text(json.dumps(texts))
    job = {"hyperparameters": run.hyperparameters, "device": device}
    (workdir / "job.json").write_text(json.dumps(job))

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)
    experiment_name = f"governance/{run.project.slug}"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(experiment_name, artifact_location=settings.MLFLOW_ARTIFACT_LOCATION)
    )
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
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)
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
                result = event
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


# --- The reaper ----------------------------------------------------------------------------------


def fine_tune_runs_reap(*, actor: Any) -> int:
    """Fail running runs whose worker stopped beating (killed, lost): never ``running`` forever.
    A failed run can be started again (``fine_tune_run_start``) while its approval holds."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S)
    reaped = 0
    for run in FineTuneRun.objects.filter(state=RunState.RUNNING, heartbeat_at__lt=cutoff):
        with transaction.atomic():
            if not FineTuneRun.objects.filter(pk=run.pk, state=RunState.RUNNING, heartbeat_at__lt=cutoff).update(
                state=RunState.FAILED
            ):
                continue  # it beat, or ended, in the meantime
            run.refresh_from_db()
            reason = (
                f"worker lost: {run.claimed_by or 'the worker'} sent no heartbeat since "
                f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC (more than {settings.TRAINING_HEARTBEAT_TIMEOUT_S} s)"
            )
            run.failure_reason, run.finished_at = reason, timezone.now()
            run.save(update_fields=["failure_reason", "finished_at"])
            ledger_append(
                actor=actor, action="fine_tune_run.failed", subject=_subject(run),
                payload={"attempt": run.attempt, "reason": reason, "reaped": True},
            )  # fmt: skip
            reaped += 1
    return reaped
