"""Optimisation runs (``optimisation_run``): a governed ONNX Runtime dynamic int8 quantisation of a
model version, from request to the registered quantised version, and the evidence that gates the
quantised version's deployment.

The run's digest covers the source weights, the method, the evaluation set as it is now (content
and review) and the measurement settings, so an approval does not carry over to a changed run. Once
approved (``optimisation_run.execute``) it is queued at once; the worker that claims it (a
conditional update on its idempotency key) materialises the source (checked against its digest),
quantises and measures it (``training.optimise``) and registers the int8 export as a new version of
the same model, with ``base`` the source, the source's dataset versions (it was trained on the same
data) and a lineage naming the run, the method, the digests and the figures.

The work runs in the worker's own process, without a heartbeat (it takes seconds to minutes, not
hours): a run can be cancelled (``optimisation_run_cancel``) until a worker starts it, not while it
runs; the reaper (``optimisation_runs_reap``, the ``training.reap`` beat) fails a running run whose
worker process on the same host is gone, and any run running for longer than
``OPTIMISATION_RUN_LEASE_S``. A failed run can be started again. They are requested through these services, the
API (``/api/v1/projects/{slug}/optimisation-runs/``) or the admin's page, and approved through the
approval API and pages. The quantised version
is an ONNX export: only the model server's ``onnx`` runtime serves it, and security scans and
bias evaluations of it run the int8 weights under ONNX Runtime (``audits.checks.garak_onnx``).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.claims import ClaimedJobs
from common.digests import canonical_digest
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import SYSTEM_USERNAME, is_platform_admin, project_roles_held
from governance.roles import Role
from governance.services import approval_holds
from registry.models import DatasetVersion, ModelVersion
from registry.records import RecordError, read_records
from registry.services import (
    dataset_version_bytes,
    dataset_version_digest,
    model_version_materialise,
    model_version_register_folder,
    use_status,
)
from training.models import TERMINAL_STATES, OptimisationMethod, OptimisationRun, RunState
from training.rules import require_cancel

logger = logging.getLogger(__name__)

OPTIMISATION_ACTION = "optimisation_run.execute"
EVALUATION_ACTION = "dataset_version.use_for_evaluation"
ONNX_MODEL_FILE = "model.onnx"  # what serving.onnx_model.export_onnx writes; a version holding it is an export
MAX_LENGTH_LIMIT = 1024


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def optimisation_run_digest(run: OptimisationRun) -> str:
    """Everything an approval of the run vouches for: the source weights, the method, the
    evaluation set as it is now (content and review) and how it is measured."""
    return canonical_digest(
        {
            "project": run.project.slug,
            "source_weights": run.source.weights_digest,
            "method": run.method,
            "evaluation_set": dataset_version_digest(run.evaluation_set),
            "text_field": run.text_field,
            "max_length": run.max_length,
        }
    )


def _subject(run: OptimisationRun) -> Subject:
    return Subject("optimisation_run", str(run.pk), optimisation_run_digest(run))


def evaluation_set_approved(run: OptimisationRun) -> tuple[bool, str]:
    """Evidence ``evaluation_set_approved``: the evaluation set may be used (not erased, personal
    data reviewed) and is approved for ``dataset_version.use_for_evaluation`` as it is now."""
    version = run.evaluation_set
    usable, reason = use_status(version)
    if not usable:
        return False, f"evaluation set {version.pk} ({version.dataset} v{version.number}): {reason}"
    if not approval_holds(
        subject_type="dataset_version", subject_id=str(version.pk), action=EVALUATION_ACTION,
        digest=dataset_version_digest(version),
    ):  # fmt: skip
        return False, (
            f"evaluation set {version.pk} ({version.dataset} v{version.number}) has no approval for "
            f"{EVALUATION_ACTION} that holds for its current digest"
        )
    return True, f"the evaluation set ({version.dataset} v{version.number}) is approved for evaluation"


def quantisation_within_bounds(model_version: ModelVersion, *, max_perplexity_increase: float) -> tuple[bool, str]:
    """Evidence ``quantisation_within_bounds``: a version that no optimisation run produced holds
    (no bound applies); a quantised one holds when the relative perplexity increase its run measured
    (``int8 / fp32 - 1``) is at most ``max_perplexity_increase`` (0.05: 5 %)."""
    run = (
        OptimisationRun.objects.filter(output=model_version, state=RunState.SUCCEEDED)
        .select_related("evaluation_set__dataset")
        .order_by("-finished_at", "-pk")
        .first()
    )
    if run is None:
        if "optimisation_run" in (model_version.lineage or {}):
            return False, (
                f"{model_version} names optimisation run {model_version.lineage['optimisation_run']} in its lineage, "
                "but no succeeded run of it measured these weights"
            )
        return True, f"{model_version} is not a quantised version: no quantisation bound applies"
    delta = run.metrics.get("perplexity_delta")
    if not isinstance(delta, int | float) or not math.isfinite(delta):
        return False, f"optimisation run {run.pk} recorded no finite perplexity delta for {model_version}"
    fp32, int8 = run.metrics["fp32"]["perplexity"], run.metrics["int8"]["perplexity"]
    measured = (
        f"optimisation run {run.pk} measured a perplexity increase of {delta:+.4%} (int8 {int8:.4f} against fp32 "
        f"{fp32:.4f} on {run.evaluation_set.dataset} v{run.evaluation_set.number})"
    )
    if delta <= max_perplexity_increase:
        return True, f"{measured}, within the allowed {max_perplexity_increase:.4%}"
    return False, f"{measured}, over the allowed {max_perplexity_increase:.4%}"


def _evaluation_texts(version: DatasetVersion, text_field: str) -> list[str]:
    data = dataset_version_bytes(version)
    try:
        texts = [r.fields.get(text_field, "") for r in read_records(data, version.format)]
    except RecordError as exc:
        raise DomainError("invalid_dataset", f"dataset version {version.pk}: {exc}") from None
    return [text for text in texts if text.strip()]


def optimisation_run_request(
    *,
    actor: Any,
    project: Project,
    source: ModelVersion,
    evaluation_set: DatasetVersion,
    method: str = OptimisationMethod.ONNX_DYNAMIC_INT8,
    text_field: str = "text",
    max_length: int = 128,
) -> OptimisationRun:
    """Record an optimisation run request (ML engineers). It runs only once a policy's approvals
    are given to its digest (``optimisation_run.execute``). The source must be a version of this
    project's models that is not an ONNX export already; the evaluation set a usable dataset
    version of this project with text in ``text_field`` (its approval for evaluation is the
    policy's evidence, checked again when the run starts)."""
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, project)):
        raise PermissionDenied(
            "permission_denied", f"requesting an optimisation run needs ml_engineer in {project.slug}"
        )
    if method not in OptimisationMethod.values:
        raise _invalid("method", f"unknown method {method!r}; known: {', '.join(OptimisationMethod.values)}")
    if source.model.project_id != project.pk:
        raise _invalid("source", f"model version {source.pk} belongs to another project")
    if ONNX_MODEL_FILE in source.files:
        raise _invalid("source", f"model version {source.pk} is an ONNX export already; quantise its source instead")
    if evaluation_set.dataset.project_id != project.pk:
        raise _invalid("evaluation_set", f"dataset version {evaluation_set.pk} belongs to another project")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= MAX_LENGTH_LIMIT:
        raise _invalid("max_length", f"must be a whole number from 2 to {MAX_LENGTH_LIMIT}, got {max_length!r}")
    usable, reason = use_status(evaluation_set)
    if not usable:
        raise DomainError(
            "dataset_not_usable", f"dataset version {evaluation_set.pk} may not be used for evaluation: {reason}"
        )
    texts = _evaluation_texts(evaluation_set, text_field)
    if not texts:
        raise _invalid("text_field", f"no record of dataset version {evaluation_set.pk} has text in {text_field!r}")
    with transaction.atomic():
        run = OptimisationRun.objects.create(
            project=project, source=source, method=method, evaluation_set=evaluation_set, text_field=text_field,
            max_length=max_length, requested_by=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="optimisation_run.requested", subject=_subject(run),
            payload={"source": source.weights_digest, "method": method,
                     "evaluation_set": dataset_version_digest(evaluation_set), "records": len(texts),
                     "text_field": text_field, "max_length": max_length},
        )  # fmt: skip
    return run


def optimisation_run_request_submit(*, actor: Any, comment: str = "", **request: Any) -> tuple[OptimisationRun, Any]:
    """An optimisation run request (``optimisation_run_request``'s arguments) and its approval
    request, in one transaction: a refusal of either leaves neither."""
    from governance.services import approval_request_submit

    with transaction.atomic():
        run = optimisation_run_request(actor=actor, **request)
        approval = approval_request_submit(
            actor=actor, subject_type="optimisation_run", subject_id=str(run.pk), action=OPTIMISATION_ACTION,
            comment=comment,
        )  # fmt: skip
    return run, approval


def _queue(run: OptimisationRun, actor: Any, why: str) -> OptimisationRun:
    run.state, run.idempotency_key = RunState.QUEUED, OptimisationRun.new_idempotency_key()
    run.attempt += 1
    run.queued_at, run.failure_reason = timezone.now(), ""
    run.save(update_fields=["state", "idempotency_key", "attempt", "queued_at", "failure_reason"])
    key = str(run.idempotency_key)
    ledger_append(
        actor=actor, action="optimisation_run.queued", subject=_subject(run),
        payload={"attempt": run.attempt, "queue": settings.TRAINING_CPU_QUEUE, "idempotency_key": key, "why": why},
    )  # fmt: skip
    dispatch_on_commit("training.optimise", args=(run.pk, key), queue=settings.TRAINING_CPU_QUEUE, task_id=key)
    return run


def on_optimisation_run_approved(run: OptimisationRun, action: str, actor: Any) -> None:
    """The approval hook: an approved run is queued at once, in the approving transaction."""
    if action == OPTIMISATION_ACTION and run.state == RunState.REQUESTED:
        _queue(run, actor, "approved")


def optimisation_run_start(*, actor: Any, run: OptimisationRun) -> OptimisationRun:
    """Queue an approved run again after it failed (a new attempt under a new idempotency key)."""
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, run.project)):
        raise PermissionDenied("permission_denied", f"starting a run needs ml_engineer in {run.project.slug}")
    with transaction.atomic():
        run = OptimisationRun.objects.select_for_update().get(pk=run.pk)
        if run.state not in (RunState.REQUESTED, RunState.FAILED):
            raise Conflict(
                "run_not_startable", f"optimisation run {run.pk} is {run.state}; only requested or failed runs start"
            )
        if not approval_holds(
            subject_type="optimisation_run", subject_id=str(run.pk), action=OPTIMISATION_ACTION,
            digest=optimisation_run_digest(run),
        ):  # fmt: skip
            raise Conflict("not_approved", f"no approval of {OPTIMISATION_ACTION} holds for run {run.pk} as it is now")
        return _queue(run, actor, "started again" if run.attempt else "started")


def optimisation_run_cancel(*, actor: Any, run: OptimisationRun, reason: str) -> OptimisationRun:
    """Cancel a run that no worker has started (requested or queued; a queued run's message then
    finds it closed): the requester, an ML engineer or a platform admin, with a reason. A running
    run is not stopped midway: it ends within minutes, or the reaper fails it."""
    require_cancel(actor, run, reason)
    with transaction.atomic():
        run = OptimisationRun.objects.select_for_update().get(pk=run.pk)
        if run.state in TERMINAL_STATES:
            raise Conflict("run_closed", f"optimisation run {run.pk} is {run.state}")
        if run.state == RunState.RUNNING:
            raise Conflict(
                "run_running",
                f"optimisation run {run.pk} is running on {run.claimed_by} and cannot be stopped midway: it ends "
                f"on its own, or the reaper fails it after {settings.OPTIMISATION_RUN_LEASE_S} s "
                "(OPTIMISATION_RUN_LEASE_S)",
            )
        run.state, run.finished_at = RunState.CANCELLED, timezone.now()
        run.save(update_fields=["state", "finished_at"])
        ledger_append(
            actor=actor, action="optimisation_run.cancelled", subject=_subject(run),
            payload={"attempt": run.attempt, "reason": reason},
        )  # fmt: skip
    return run


# ``started_at`` is the claim's time (the run does not beat); a claim by a process on this host that
# is gone is lost at once, any other after the lease.
_OPTIMISATION_JOBS = ClaimedJobs(
    OptimisationRun, "state", RunState.QUEUED, RunState.RUNNING, "queued_at", "OPTIMISATION_RUN_LEASE_S",
    beat="started_at",
)  # fmt: skip


def optimisation_runs_reap(*, actor: Any) -> int:
    """Fail the running runs whose worker is gone (a process on this host that no longer exists)
    or that have run past ``OPTIMISATION_RUN_LEASE_S``: never ``running`` forever. The worker of
    such a run, if it lives on, records nothing more (``_finish`` finds the run no longer its own)."""

    def reason(run: OptimisationRun) -> str:
        return (
            f"worker lost: {run.claimed_by or 'the worker'} started it at {run.started_at:%Y-%m-%d %H:%M:%S} UTC "
            f"and is gone, or it ran past OPTIMISATION_RUN_LEASE_S ({settings.OPTIMISATION_RUN_LEASE_S} s)"
        )

    def record(run: OptimisationRun) -> None:
        ledger_append(
            actor=actor, action="optimisation_run.failed", subject=_subject(run),
            payload={"attempt": run.attempt, "reason": run.failure_reason, "metrics": {}, "output": None,
                     "reaped": True},
        )  # fmt: skip

    return _OPTIMISATION_JOBS.fail_lost(failed=RunState.FAILED, reason=reason, record=record)


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def _ours(run: OptimisationRun) -> Any:
    return OptimisationRun.objects.filter(
        pk=run.pk, state=RunState.RUNNING, claimed_by=run.claimed_by, attempt=run.attempt
    )


def _finish(run: OptimisationRun, state: str, *, reason: str = "", **fields: Any) -> OptimisationRun | None:
    """Record the attempt's end while this worker's attempt still holds the run; else nothing."""
    with transaction.atomic():
        current = _ours(run).select_for_update().first()
        if current is None:
            logger.warning("optimisation run %s attempt %s is no longer this worker's; its end is not recorded",
                           run.pk, run.attempt)  # fmt: skip
            return None
        run = current
        run.state, run.finished_at, run.failure_reason = state, timezone.now(), reason
        for name, value in fields.items():
            setattr(run, name, value)
        run.save()
        ledger_append(
            actor=_system(), action=f"optimisation_run.{state}", subject=_subject(run),
            payload={"attempt": run.attempt, "reason": reason, "metrics": run.metrics,
                     "output": run.output.weights_digest if run.output else None},
        )  # fmt: skip
    return run


def _preflight(run: OptimisationRun) -> str | None:
    if not approval_holds(
        subject_type="optimisation_run", subject_id=str(run.pk), action=OPTIMISATION_ACTION,
        digest=optimisation_run_digest(run),
    ):  # fmt: skip
        return (
            f"no approval of {OPTIMISATION_ACTION} holds for the run as it is now (its digest changed, or it was "
            "revoked)"
        )
    holds, detail = evaluation_set_approved(run)
    return None if holds else detail


def optimisation_workdir(run: OptimisationRun) -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / f"optimise-{run.pk}-{run.attempt}"


def optimisation_run_execute(*, run_id: int, idempotency_key: str, worker: str) -> OptimisationRun | None:
    """Quantise and measure a queued run, once: the delivery that claims it (state ``queued`` and
    this key, by a conditional update) does the work; any other returns ``None`` and changes
    nothing. A failure (approval no longer holding, source weights not matching their digest, an
    export or measurement error, a refused registration) fails the run on record, saying why."""
    from training.optimise import OptimisationError, quantise_dynamic_int8

    system = _system()
    with transaction.atomic():
        claimed = OptimisationRun.objects.filter(
            pk=run_id, idempotency_key=idempotency_key, state=RunState.QUEUED
        ).update(state=RunState.RUNNING, claimed_by=worker, started_at=timezone.now())
        if not claimed:
            logger.info(
                "optimisation run %s: delivery %s found it taken or closed; nothing done", run_id, idempotency_key
            )
            return None
        run = OptimisationRun.objects.select_related("project", "source__model__project", "evaluation_set").get(
            pk=run_id
        )
        ledger_append(
            actor=system, action="optimisation_run.started", subject=_subject(run),
            payload={"attempt": run.attempt, "worker": worker, "idempotency_key": idempotency_key},
        )  # fmt: skip
    reason = _preflight(run)
    if reason:
        return _finish(run, RunState.FAILED, reason=reason)
    workdir = optimisation_workdir(run)
    shutil.rmtree(workdir, ignore_errors=True)
    registered = False
    try:
        try:
            model_version_materialise(run.source, workdir / "source")
            texts = _evaluation_texts(run.evaluation_set, run.text_field)
            figures = quantise_dynamic_int8(workdir / "source", workdir, texts, max_length=run.max_length)
        except (DomainError, OptimisationError) as exc:
            return _finish(run, RunState.FAILED, reason=f"optimisation failed: {getattr(exc, 'message', exc)}")
        except Exception as exc:  # the run fails with the reason; the worker lives on
            logger.exception("optimisation run %s failed", run.pk)
            return _finish(run, RunState.FAILED, reason=f"optimisation failed: {type(exc).__name__}: {exc}")
        if not _ours(run).exists():
            return None
        source = run.source
        lineage = {
            "optimisation_run": run.pk, "attempt": run.attempt, "method": run.method,
            "source_weights_digest": source.weights_digest, "run_digest": optimisation_run_digest(run),
            "evaluation_set": dataset_version_digest(run.evaluation_set), "figures": figures,
        }  # fmt: skip
        try:
            # The same training data as the source: the quantised weights are the source's.
            output, _ = model_version_register_folder(
                actor=system, model=source.model, folder=str(workdir / "int8"), base=source,
                dataset_versions=list(source.dataset_versions.all()),
                allowed_roots=[Path(settings.TRAINING_WORK_ROOT).resolve()], lineage=lineage,
            )  # fmt: skip
        except DomainError as exc:
            return _finish(run, RunState.FAILED, reason=f"registering the output failed: {exc.message}")
        registered = True
        return _finish(run, RunState.SUCCEEDED, output=output, metrics=figures)
    finally:
        # The int8 folder is the registered version's ``source``; the copies of the inputs go.
        for leftover in ("source", "fp32", *(() if registered else ("int8",))):
            shutil.rmtree(workdir / leftover, ignore_errors=True)
