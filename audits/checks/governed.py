"""The audits' governed subjects (``security_scan``, ``bias_evaluation``) and the evidence checks a
deployment policy asks of a model version, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import SubjectType, register_subject_type

PARAMS = {"profile": str, "max_age_days": int}


def _getter(model_name: str) -> Any:
    def get(pk: str) -> Any:
        from audits.checks import models

        # Only ASCII digits in the database's range: '²' is a digit to str.isdigit but not to int(),
        # and an id past 2**63 - 1 names nothing; both answer like a missing subject.
        if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
            return None
        return (
            getattr(models, model_name)
            .objects.select_related("project", "model_version__model")
            .filter(pk=int(pk))
            .first()
        )

    return get


def _describe(audit: Any) -> dict[str, Any]:
    return {
        "model_version": f"{audit.model_version.model} v{audit.model_version.number} ({audit.weights_digest})",
        "profile": audit.profile_name, "state": audit.state, "verdict": audit.verdict, "reasons": audit.reasons,
        "report": audit.report_digest,
    }  # fmt: skip


def register() -> None:
    from audits.checks.services import audit_digest, bias_within_bounds, on_audit_approved, security_scan_passed

    for name, model_name in (("security_scan", "SecurityScan"), ("bias_evaluation", "BiasEvaluation")):
        register_subject_type(
            SubjectType(
                name=name, get=_getter(model_name), project=lambda audit: audit.project, digest=audit_digest,
                describe=_describe, on_approved=on_audit_approved, authors=lambda audit: [audit.requested_by_id],
            )
        )  # fmt: skip
    register_check("security_scan_passed", "model_version", security_scan_passed, PARAMS)
    register_check("bias_within_bounds", "model_version", bias_within_bounds, PARAMS)
