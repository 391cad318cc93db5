"""The reaper of abandoned runs: a running scan or evaluation whose worker stopped beating fails
on record; a queued one whose message was lost is sent again. Both through ``common.claims``,
the one reaper of abandoned claims."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from audits.checks.evidence import KINDS
from audits.checks.models import AuditState
from audits.checks.services.runs import _subject
from audits.ledger.services import ledger_append
from common.claims import ClaimedJobs

# A worker beats ``heartbeat_at`` while it runs an audit; on a queued one, it marks when the audit
# was last sent again (claiming sets it anew). Its age counts from its creation before that.
_AUDIT_JOBS = {
    model: ClaimedJobs(
        model, "state", AuditState.QUEUED, AuditState.RUNNING, "created_at", "TRAINING_HEARTBEAT_TIMEOUT_S",
        beat="heartbeat_at", process_check=False,
    )
    for model in KINDS
}  # fmt: skip


def audits_reap(*, actor: Any, stale_queued_s: float | None = None) -> int:
    """Fail running scans and evaluations whose worker stopped beating, and send again the queued
    ones whose message was lost (``_audits_resend_stale_queued``). Returns how many it failed or
    sent again."""

    def record(audit: Any) -> None:
        ledger_append(
            actor=actor, action=f"{KINDS[type(audit)]}.failed", subject=_subject(audit),
            payload={"failure_reason": audit.failure_reason, "reaped": True},
        )  # fmt: skip

    reaped = _audits_resend_stale_queued(stale_queued_s=stale_queued_s)
    for jobs in _AUDIT_JOBS.values():
        reaped += jobs.fail_lost(failed=AuditState.FAILED, reason=_lost_reason, record=record)
    return reaped


def _lost_reason(audit: Any) -> str:
    return f"worker lost: {audit.claimed_by} sent no heartbeat since {audit.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"


def _audits_resend_stale_queued(*, stale_queued_s: float | None = None) -> int:
    """Send again, through the outbox, the queued audits no worker claimed within
    ``stale_queued_s`` (default ``TRAINING_HEARTBEAT_TIMEOUT_S``): their message went with a broker
    or a worker that lost it. Each is sent with its own idempotency key, so a delivery that was only
    slow and this one claim it once between them (``_claim``); nothing is recorded in the ledger,
    as the registry's reaper does. A queued row's ``heartbeat_at`` marks when it was last sent
    again (claiming sets it anew), so one stale audit is sent once per period, not on every pass.
    Its age counts from its creation: one queued later by an approval may be sent again early,
    which the idempotency key makes harmless."""
    return sum(
        jobs.resend_stale_queued(
            task=f"checks.{KINDS[model]}", queue=settings.TRAINING_CPU_QUEUE, stale_queued_s=stale_queued_s, keyed=True
        )
        for model, jobs in _AUDIT_JOBS.items()
    )
