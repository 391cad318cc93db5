"""Fine-tune runs from request to queue: requesting, queueing once approved, starting again,
cancelling, and the reaper that fails the runs whose worker stopped beating."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.claims import ClaimedJobs
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from registry.models import DatasetVersion, ModelVersion, PromptTemplate
from registry.records import RecordError, read_records
from registry.services import dataset_version_bytes, dataset_version_digest, use_status
from training.models import TERMINAL_STATES, FineTuneRun, RunState
from training.rules import ACTION, _decimal, _hyperparameters, _invalid, fine_tune_run_digest, require_cancel
from training.services.quotas import _check_quota, _lock_quota


def _subject(run: FineTuneRun) -> Subject:
    return Subject("fine_tune_run", str(run.pk), fine_tune_run_digest(run))


def _examples(
    versions: list[DatasetVersion], text_field: str, template: PromptTemplate | None, *, method: str = "full"
) -> list[Any]:
    """The training texts: each record's ``text_field`` (through the prompt template, whose
    ``{field}`` placeholders take the record's fields), in dataset-version order. For ``method``
    ``dpo``: the preference pairs, ``{"prompt", "chosen", "rejected"}`` of every record
    (``_preference_pairs``)."""
    if method == "dpo":
        return _preference_pairs(versions)
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


def _preference_pairs(versions: list[DatasetVersion]) -> list[dict[str, str]]:
    """Every record as a preference pair; 400 ``invalid_dataset`` naming the version and the
    record that lacks a non-empty ``prompt``, ``chosen`` or ``rejected``."""
    from training.engine import PAIR_FIELDS

    pairs = []
    for version in versions:
        data = dataset_version_bytes(version)
        try:
            for record in read_records(data, version.format):
                missing = [name for name in PAIR_FIELDS if not record.fields.get(name, "").strip()]
                if missing:
                    raise DomainError(
                        "invalid_dataset",
                        f"dataset version {version.pk} ({version.dataset} v{version.number}), record {record.number}: "
                        f"a preference fine-tune (method dpo) needs {', '.join(PAIR_FIELDS)} in every record; "
                        f"it lacks {', '.join(missing)}",
                        fields={"dataset_versions": [f"record {record.number} of {version.pk} lacks {missing[0]}"]},
                    )
                pairs.append({name: record.fields[name] for name in PAIR_FIELDS})
        except RecordError as exc:
            raise DomainError("invalid_dataset", f"dataset version {version.pk}: {exc}") from None
    return pairs


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
    params = _hyperparameters(hyperparameters)
    if params.method == "dpo" and prompt_template is not None:
        raise _invalid("prompt_template", "a preference fine-tune (method dpo) trains on the pairs as they are")
    texts = _examples(dataset_versions, text_field, prompt_template, method=params.method)
    if not texts:
        raise _invalid("text_field", f"no record of the dataset versions has a non-empty field {text_field!r}")
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


def fine_tune_run_request_submit(*, actor: Any, comment: str = "", **request: Any) -> tuple[FineTuneRun, Any]:
    """A fine-tune run request (``fine_tune_run_request``'s arguments) and its approval request
    (``fine_tune_run.execute``), in one transaction: the admin's "Request a fine-tune run" page.
    A refusal of either leaves neither, so a person never finds a run that waits for nothing.
    Returns the run and the approval request."""
    from governance.services import approval_request_submit

    with transaction.atomic():
        run = fine_tune_run_request(actor=actor, **request)
        approval = approval_request_submit(
            actor=actor, subject_type="fine_tune_run", subject_id=str(run.pk), action=ACTION, comment=comment
        )
    return run, approval


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
    require_cancel(actor, run, reason)
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


_RUN_JOBS = ClaimedJobs(
    FineTuneRun, "state", RunState.QUEUED, RunState.RUNNING, "queued_at", "TRAINING_HEARTBEAT_TIMEOUT_S",
    beat="heartbeat_at", process_check=False,
)  # fmt: skip


def fine_tune_runs_reap(*, actor: Any) -> int:
    """Fail running runs whose worker stopped beating (killed, lost): never ``running`` forever.
    A failed run can be started again (``fine_tune_run_start``) while its approval holds."""

    def reason(run: FineTuneRun) -> str:
        return (
            f"worker lost: {run.claimed_by or 'the worker'} sent no heartbeat since "
            f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC (more than {settings.TRAINING_HEARTBEAT_TIMEOUT_S} s)"
        )

    def record(run: FineTuneRun) -> None:
        ledger_append(
            actor=actor, action="fine_tune_run.failed", subject=_subject(run),
            payload={"attempt": run.attempt, "reason": run.failure_reason, "reaped": True},
        )  # fmt: skip

    return _RUN_JOBS.fail_lost(failed=RunState.FAILED, reason=reason, record=record)
