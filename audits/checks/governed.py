"""The audits' governed subjects (``security_scan``, ``bias_evaluation``) and the evidence checks a
deployment policy asks of a model version, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import (
    Fact,
    SubjectType,
    authors_by_field,
    names_by_pk,
    register_subject_type,
    register_summary,
)

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


def _outcome(audit: Any) -> tuple[str, str]:
    """An audit's outcome in words, and its tone on the decision page."""
    from audits.checks.models import AuditState, Verdict

    finished = f"{audit.finished_at:%Y-%m-%d}" if audit.finished_at else ""
    if audit.state == AuditState.COMPLETED and audit.verdict == Verdict.PASSED:
        return f"passed {finished}", "ok"
    if audit.state == AuditState.COMPLETED:
        return f"failed {finished}: {'; '.join(audit.reasons) or 'no reason recorded'}", "bad"
    if audit.state == AuditState.FAILED:
        return f"did not run to the end {finished}: {audit.failure_reason}", "bad"
    return audit.get_state_display(), "warning"


def _name(audit: Any) -> str:
    from audits.checks.models import SecurityScan

    if isinstance(audit, SecurityScan):
        return f"security scan ({audit.profile_name})"
    return f"bias evaluation ({audit.profile_name}, {audit.sensitive_feature})"


def _audit_facts(model_version: Any) -> list[Fact]:
    """The verdicts of the latest scans and evaluations of these weights (for a model version,
    and for a deployment through its model version)."""
    from audits.checks.selectors import latest_audits_of

    facts = []
    for audit in latest_audits_of(model_version):
        value, tone = _outcome(audit)
        facts.append(
            Fact(_name(audit), f"{value} (run {audit.pk}, {audit.get_trigger_display()})", link=audit, tone=tone)
        )
    if not facts:
        facts.append(Fact("security scans and bias evaluations", "none of these weights yet", tone="warning"))
    return facts


def _waived_audit_facts(audit: Any) -> list[Fact]:
    """What a waiver would accept: the run, its verdict and reasons, the report's digest."""
    value, tone = _outcome(audit)
    return [
        Fact("model version", f"{audit.model_version} ({audit.weights_digest})", link=audit.model_version),
        Fact(_name(audit), value, link=audit, tone=tone),
        Fact("report", audit.report_digest or "none"),
    ]


def register() -> None:
    from audits.checks.models import BiasEvaluation, SecurityScan
    from audits.checks.services import (
        audit_digest,
        audit_not_now,
        bias_within_bounds,
        on_audit_approved,
        security_scan_passed,
    )

    for name, model in (("security_scan", SecurityScan), ("bias_evaluation", BiasEvaluation)):
        register_subject_type(
            SubjectType(
                name=name, get=_getter(model.__name__), project=lambda audit: audit.project, digest=audit_digest,
                describe=_describe, actions=(f"{name}.run", f"{name}.waive"), on_approved=on_audit_approved,
                authors=lambda audit: [audit.requested_by_id], authors_by_id=authors_by_field(model, "requested_by"),
                names_by_id=names_by_pk(model, "model_version__model__project"),
                not_now=audit_not_now,
            )
        )  # fmt: skip
        register_summary(name, _waived_audit_facts)
    register_check("security_scan_passed", "model_version", security_scan_passed, PARAMS)
    register_check("bias_within_bounds", "model_version", bias_within_bounds, PARAMS)
    # A decider reads the verdicts themselves beside the evidence checks: of a model version, and
    # of a deployment's model version (serving registers the deployment; this app its audits).
    register_summary("model_version", _audit_facts)
    register_summary("deployment", lambda deployment: _audit_facts(deployment.model_version))
