"""What a model audit vouches for, and whether the runs on record are evidence now: the digest a
waiver is given to, and the policy checks ``security_scan_passed`` and ``bias_within_bounds``.
Pure rules and reads; nothing here writes.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from django.utils import timezone

from audits.checks import profiles
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Verdict
from common.digests import canonical_digest
from common.errors import DomainError
from governance.services.approvals import approvals_holding
from registry.models import ModelVersion

KINDS = {SecurityScan: "security_scan", BiasEvaluation: "bias_evaluation"}


def audit_digest(audit: SecurityScan | BiasEvaluation) -> str:
    """What a waiver vouches for: the weights, the profile, and the report with its verdict (and,
    for an evaluation of special-category data, the legal basis recorded for it)."""
    fields: dict[str, Any] = {
        "kind": KINDS[type(audit)],
        "weights": audit.weights_digest,
        "profile": {"name": audit.profile_name, **audit.profile},
        "report": audit.report_digest,
        "verdict": audit.verdict,
        "reasons": audit.reasons,
    }
    if isinstance(audit, BiasEvaluation):
        fields["dataset_version"] = audit.dataset_version.sha256
        fields["chart"] = audit.chart_digest
        if audit.special_category:  # only then: the digests of earlier evaluations stay as they were
            fields["legal_basis"] = {
                "category": audit.special_category, "basis": audit.legal_basis,
                "safeguards_confirmed": audit.safeguards_confirmed,
            }  # fmt: skip
    return canonical_digest(fields)


def audit_not_now(audit: SecurityScan | BiasEvaluation, action: str) -> str | None:
    """Why a request for ``action`` on ``audit`` may not be opened or approved now; None if it may.
    A waiver accepts a failing verdict: a run that never reached one (it errored, was cancelled or
    has not finished) has nothing to waive and is re-run instead; a passing one needs no waiver.
    Approving ``<kind>.run`` queues the run, so only a run waiting for that approval takes it."""
    what = f"{KINDS[type(audit)].replace('_', ' ')} {audit.pk}"
    if action.endswith(".waive"):
        if audit.state == AuditState.FAILED:
            return (
                f"{what} failed to run ({audit.failure_reason or 'no reason recorded'}): an error is not a verdict, "
                "so there is nothing to waive; run it again"
            )
        if audit.state != AuditState.COMPLETED:
            return f"{what} is {audit.get_state_display()}: only a finished run with a failing verdict is waived"
        if audit.verdict != Verdict.FAILED:
            return f"{what} passed: there is nothing to waive"
    elif action.endswith(".run") and audit.state != AuditState.REQUESTED:
        return f"{what} is {audit.get_state_display()}: only a run waiting for approval is approved to run"
    return None


# Keys of a profile that change nothing a run measures: editing them keeps earlier runs valid.
_PROFILE_WORDS = ("description", "rescan_every_days")


def _measured(profile: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in profile.items() if key not in _PROFILE_WORDS}


def _latest(model: type[Model], model_version: ModelVersion, profile: str, max_age_days: int) -> list[Any]:
    """The runs the evidence judges: the latest completed run of these weights under ``profile``
    not older than ``max_age_days``; for bias evaluations, the latest such run of each (dataset
    version, sensitive feature) pair evaluated in that window. Oldest first; empty if none."""
    since = timezone.now() - timezone.timedelta(days=max_age_days)
    completed = model.objects.filter(
        model_version=model_version, weights_digest=model_version.weights_digest, profile_name=profile,
        state=AuditState.COMPLETED, finished_at__gte=since,
    )  # fmt: skip
    if model is SecurityScan:
        latest = completed.order_by("-finished_at", "-pk").first()
        return [latest] if latest is not None else []
    by_pair: dict[tuple[int, str], Any] = {}
    for audit in completed.select_related("dataset_version").order_by("finished_at", "pk"):
        by_pair[(audit.dataset_version_id, audit.sensitive_feature)] = audit
    return sorted(by_pair.values(), key=lambda a: (a.finished_at, a.pk))


def scope_in_words(scope: dict[str, str] | None) -> str:
    """Where evidence is asked for: ``deployment 12 (production)``, or a model version alone."""
    if not scope:
        return "a model version, whatever its deployment"
    if scope.get("deployment"):
        return f"deployment {scope['deployment']} ({scope.get('environment', 'no environment')})"
    return f"environment {scope.get('environment')}"


def waiver_scope_in_words(context: dict[str, str]) -> str:
    """A waiver's scope as its request names it: ``production, deployment 12, for the launch``."""
    where = context.get("environment") or "no scope named"
    if context.get("deployment"):
        where += f", deployment {context['deployment']}"
    return where + (f", for {context['use']}" if context.get("use") else "")


def waiver_covers(context: dict[str, str], scope: dict[str, str] | None) -> bool:
    """Does a waiver requested with ``context`` count where evidence is asked for (``scope``: the
    environment and id of a deployment; None for a model version, which no environment bounds)?
    Only within the environment it names (or ``any``) and, when it names one, that deployment. A
    waiver that names no scope (one from before scopes) covers nothing."""
    environment = context.get("environment")
    if environment is None:
        return False
    if environment != "any" and (scope is None or scope.get("environment") != environment):
        return False
    return not context.get("deployment") or (scope is not None and scope.get("deployment") == context["deployment"])


def _judge(
    audit: SecurityScan | BiasEvaluation, current: dict[str, Any], scope: dict[str, str] | None
) -> tuple[bool, str]:
    kind = KINDS[type(audit)]
    when = f"{kind.replace('_', ' ')} {audit.pk} ({audit.finished_at:%Y-%m-%d})"
    if _measured(audit.profile) != _measured(current):
        return False, f"{when} ran under an earlier definition of profile {audit.profile_name!r}"
    if audit.verdict == Verdict.PASSED:
        return True, f"{when} passed"
    waivers = approvals_holding(
        subject_type=kind, subject_id=str(audit.pk), action=f"{kind}.waive", digest=audit_digest(audit)
    )
    covering = [waiver for waiver in waivers if waiver_covers(waiver["context"], scope)]
    if covering:
        scoped = waiver_scope_in_words(covering[0]["context"])
        return True, f"{when} failed and its findings are waived ({scoped}): {'; '.join(audit.reasons)}"
    if waivers:
        others = "; ".join(waiver_scope_in_words(waiver["context"]) for waiver in waivers)
        return False, (
            f"{when} failed: {'; '.join(audit.reasons)}; its waiver is for {others}, not for {scope_in_words(scope)}"
        )
    return False, f"{when} failed: {'; '.join(audit.reasons)}"


def _audit_evidence(
    model: type[Model], model_version: ModelVersion, profile: str, max_age_days: int, scope: dict[str, str] | None
) -> tuple[bool, str]:
    kind = KINDS[model]
    try:
        current = profiles.profile("security" if model is SecurityScan else "bias", profile)
    except (DomainError, profiles.ProfileError) as exc:
        return False, f"profile {profile!r} cannot be read now: {exc}"
    audits = _latest(model, model_version, profile, max_age_days)
    if not audits:
        text = kind.replace("_", " ")
        return False, f"no {text} under profile {profile!r} of these weights in the last {max_age_days} days"
    judged = [_judge(audit, current, scope) for audit in audits]
    refused = [reason for ok, reason in judged if not ok]
    if refused:
        return False, "; ".join(refused)
    return True, "; ".join(reason for _, reason in judged)


def security_scan_passed(
    model_version: ModelVersion, *, profile: str, max_age_days: int, scope: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Evidence: the latest scan of these exact weights under ``profile``, not older than
    ``max_age_days``, passed, or failed with a waiver that holds for its report and whose scope
    covers ``scope`` (the deployment asked about: its environment and id; None for the model
    version alone, which only a waiver for ``any`` environment covers). It counts only if it ran
    under the profile as defined now (its description and re-scan period aside): a pass under an
    earlier, weaker definition does not."""
    return _audit_evidence(SecurityScan, model_version, profile, max_age_days, scope)


def bias_within_bounds(
    model_version: ModelVersion, *, profile: str, max_age_days: int, scope: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Evidence: for each (dataset version, sensitive feature) pair evaluated on these weights
    under ``profile`` in the last ``max_age_days``, the latest completed evaluation of that pair
    kept within its bounds (or was waived, by a waiver whose scope covers ``scope``, as for
    ``security_scan_passed``) and ran under the profile as defined now (its description and
    re-scan period aside). A newer pass on one feature does not hide a failure on another; a pair
    whose evaluations are all older than ``max_age_days`` no longer counts."""
    return _audit_evidence(BiasEvaluation, model_version, profile, max_age_days, scope)
