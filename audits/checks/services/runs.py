"""The life of a scan or evaluation run, shared by both kinds: queued at once or after its
approval, cancelled before it starts, claimed once by a worker (its idempotency key), kept alive by
heartbeats, and finished with its ledger entry (a scheduled run that regresses opens a review).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from audits.checks.evidence import KINDS, audit_digest
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Trigger, Verdict
from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError, PermissionDenied
from common.tasks import dispatch_on_commit
from governance.permissions import SYSTEM_USERNAME, is_platform_admin, project_roles_held
from governance.policy import current_policy_set
from governance.roles import Role
from governance.services import approval_request_submit, subject_pending_requests_withdraw
from registry.models import ModelVersion
from registry.services import model_version_materialise

logger = logging.getLogger(__name__)


def _system() -> Any:
    return get_user_model().objects.get(username=SYSTEM_USERNAME)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def _subject(audit: SecurityScan | BiasEvaluation) -> Subject:
    return Subject(KINDS[type(audit)], str(audit.pk), audit_digest(audit))


def require_requester(actor: Any, project: Any, reviewer: Role) -> None:
    if not (is_platform_admin(actor) or project_roles_held(actor, project) & {Role.ML_ENGINEER, reviewer}):
        raise PermissionDenied(
            "permission_denied", f"requesting this audit needs ml_engineer or {reviewer.value} in {project.slug}"
        )


def _check_weights(model_version: ModelVersion, folder: Path) -> None:
    """Raise ``weights_mismatch`` unless every file still matches the version's digest."""
    try:
        model_version_materialise(model_version, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _queue_or_wait(audit: SecurityScan | BiasEvaluation, actor: Any) -> None:
    """Queue at once, unless a policy asks for approval of ``<kind>.run`` (then the approval
    queues it, through the subject's approval hook)."""
    kind = KINDS[type(audit)]
    rule = current_policy_set().rule_for(f"{kind}.run", {"project": audit.project.slug})
    if rule is None or audit.trigger == Trigger.SCHEDULE:
        _queue(audit, actor)


def _queue(audit: SecurityScan | BiasEvaluation, actor: Any) -> None:
    import uuid

    kind = KINDS[type(audit)]
    audit.state, audit.idempotency_key = AuditState.QUEUED, uuid.uuid4()
    audit.save(update_fields=["state", "idempotency_key"])
    ledger_append(
        actor=actor, action=f"{kind}.queued", subject=_subject(audit),
        payload={"idempotency_key": str(audit.idempotency_key), "trigger": audit.trigger},
    )  # fmt: skip
    key = str(audit.idempotency_key)
    dispatch_on_commit(f"checks.{kind}", args=(audit.pk, key), queue=settings.TRAINING_CPU_QUEUE, task_id=key)


def on_audit_approved(audit: SecurityScan | BiasEvaluation, action: str, actor: Any) -> None:
    if action == f"{KINDS[type(audit)]}.run" and audit.state == AuditState.REQUESTED:
        _queue(audit, actor)


def audit_cancel(*, actor: Any, audit: SecurityScan | BiasEvaluation, reason: str) -> Any:
    """Cancel a scan or evaluation that has not started (ML engineers and the kind's reviewers):
    one still waiting for approval, whose pending approval requests are withdrawn with it, or one
    queued, which a late delivery then finds closed (``_claim``). A running one is left to finish,
    or to the reaper; a finished one is a record."""
    kind = KINDS[type(audit)]
    require_requester(
        actor, audit.project, Role.SECURITY_REVIEWER if isinstance(audit, SecurityScan) else Role.FAIRNESS_REVIEWER
    )
    if not reason.strip():
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        audit = type(audit).objects.select_for_update().get(pk=audit.pk)
        if audit.state not in (AuditState.REQUESTED, AuditState.QUEUED):
            raise Conflict(
                "not_cancellable",
                f"{kind} {audit.pk} is {audit.state}: only a requested or queued one can be cancelled",
            )
        was = audit.state
        audit.state, audit.finished_at = AuditState.CANCELLED, timezone.now()
        audit.save(update_fields=["state", "finished_at"])
        ledger_append(
            actor=actor, action=f"{kind}.cancelled", subject=_subject(audit), payload={"reason": reason, "was": was}
        )
        if was == AuditState.REQUESTED:
            subject_pending_requests_withdraw(
                subject_type=kind, subject_id=str(audit.pk),
                reason=f"{kind} {audit.pk} cancelled by {actor.get_username()}: {reason}",
            )  # fmt: skip
    return audit


def _claim(model: type[Model], pk: int, key: str, worker: str) -> Any:
    now = timezone.now()
    with transaction.atomic():
        if not model.objects.filter(pk=pk, idempotency_key=key, state=AuditState.QUEUED).update(
            state=AuditState.RUNNING, claimed_by=worker, started_at=now, heartbeat_at=now
        ):
            logger.info("%s %s: delivery with key %s found it taken or closed", model.__name__, pk, key)
            return None
        audit = model.objects.select_related("project", "model_version__model").get(pk=pk)
        ledger_append(
            actor=_system(), action=f"{KINDS[model]}.started", subject=_subject(audit),
            payload={"worker": worker, "idempotency_key": key},
        )  # fmt: skip
    return audit


def _beat(audit: SecurityScan | BiasEvaluation) -> bool:
    """Record that this worker still runs ``audit``; only while the row is running and claimed by
    this worker (a reaped run, or one a second delivery took, is no longer this worker's)."""
    return bool(
        type(audit)
        .objects.filter(pk=audit.pk, state=AuditState.RUNNING, claimed_by=audit.claimed_by)
        .update(heartbeat_at=timezone.now())
    )


def _finish(audit: SecurityScan | BiasEvaluation, **fields: Any) -> Any:
    """Record the outcome of the run this worker claimed, with its ledger entry. A row that is no
    longer running or is claimed by another worker (the reaper failed it, a second delivery took
    it) is left as it is and returned unchanged: a reaped run never becomes evidence."""
    kind = KINDS[type(audit)]
    worker = audit.claimed_by
    with transaction.atomic():
        audit = type(audit).objects.select_for_update().get(pk=audit.pk)
        if audit.state != AuditState.RUNNING or audit.claimed_by != worker:
            logger.warning(
                "%s %s: worker %s finished it, but it is %s (claimed by %s); its outcome is not recorded",
                type(audit).__name__, audit.pk, worker, audit.state, audit.claimed_by or "nobody",
            )  # fmt: skip
            return audit
        for name, value in fields.items():
            setattr(audit, name, value)
        audit.finished_at = timezone.now()
        audit.save()
        action = f"{kind}.failed" if audit.state == AuditState.FAILED else f"{kind}.completed"
        payload: dict[str, Any] = {"verdict": audit.verdict, "reasons": audit.reasons, "report": audit.report_digest,
                                   "failure_reason": audit.failure_reason}  # fmt: skip
        if isinstance(audit, SecurityScan):
            payload["findings"] = audit.findings
        else:
            headline = ("demographic_parity_difference", "equalized_odds_difference", "unparsed")
            payload["results"] = {k: audit.results.get(k) for k in headline}
        ledger_append(actor=_system(), action=action, subject=_subject(audit), payload=payload)
        if audit.state == AuditState.COMPLETED:
            _note_regression(audit)
    return audit


def _note_regression(audit: SecurityScan | BiasEvaluation) -> None:
    """A scheduled run that fails where the last run of the same version and profile passed
    records the regression and opens a review: a waiver request in the reviewers' inbox."""
    if audit.trigger != Trigger.SCHEDULE or audit.verdict != Verdict.FAILED:
        return
    previous = (
        type(audit)
        .objects.filter(model_version=audit.model_version, profile_name=audit.profile_name, state=AuditState.COMPLETED)
        .exclude(pk=audit.pk)
        .order_by("-finished_at")
        .first()
    )
    if previous is None or previous.verdict != Verdict.PASSED:
        return
    kind = KINDS[type(audit)]
    audit.regression_of = previous
    audit.save(update_fields=["regression_of"])
    system = _system()
    ledger_append(
        actor=system, action=f"{kind}.regression", subject=_subject(audit),
        payload={"previous": previous.pk, "previous_report": previous.report_digest, "reasons": audit.reasons},
    )  # fmt: skip
    # The review keeps these weights where they already run while it lasts: its scope is every
    # environment, as the reviewer reads on the decision page before waiving (or rejecting it and
    # asking for a narrower waiver).
    approval_request_submit(
        actor=system, subject_type=kind, subject_id=str(audit.pk), action=f"{kind}.waive",
        context={"environment": "any", "use": "keeping these weights where they run while the regression is reviewed"},
        comment=f"regression: {kind} {previous.pk} passed, this re-run fails: {'; '.join(audit.reasons)[:1500]}",
    )  # fmt: skip
