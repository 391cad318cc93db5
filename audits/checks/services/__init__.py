"""Writes of the model audits: requesting, executing and reaping security scans and bias
evaluations. Each checks the actor, changes the rows and appends its ledger entries in one
transaction; execution runs in Celery tasks (``checks.security_scan``, ``checks.bias_evaluation``)
on the ``cpu`` queue, claimed once by an idempotency key.

``runs`` holds the life of a run shared by both kinds (queue, cancel, claim, heartbeat, finish);
``scans`` and ``evaluations`` request and execute each kind; ``rescans`` re-runs them on schedule;
``reaper`` fails abandoned runs and re-sends lost ones. The evidence they give (digest, policy
checks) is read by ``audits.checks.evidence``, re-exported here.
"""

from __future__ import annotations

from audits.checks.evidence import KINDS, audit_digest, audit_not_now, bias_within_bounds, security_scan_passed
from audits.checks.services.evaluations import (
    EVALUATION_DATA_ACTION,
    bias_evaluation_execute,
    bias_evaluation_request,
    require_evaluation_data_usable,
)
from audits.checks.services.reaper import audits_reap
from audits.checks.services.rescans import audits_rescan_due
from audits.checks.services.runs import audit_cancel, on_audit_approved, require_requester
from audits.checks.services.scans import security_scan_execute, security_scan_request

__all__ = [
    "EVALUATION_DATA_ACTION",
    "KINDS",
    "audit_cancel",
    "audit_digest",
    "audit_not_now",
    "audits_reap",
    "audits_rescan_due",
    "bias_evaluation_execute",
    "bias_evaluation_request",
    "bias_within_bounds",
    "on_audit_approved",
    "require_evaluation_data_usable",
    "require_requester",
    "security_scan_execute",
    "security_scan_passed",
    "security_scan_request",
]
