"""Scheduled re-runs: every profile that sets ``rescan_every_days`` runs again on the model
versions whose latest completed run under it is older than that."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from audits.checks import profiles
from audits.checks.evidence import KINDS
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Trigger
from audits.checks.services.evaluations import bias_evaluation_request
from audits.checks.services.runs import _subject
from audits.checks.services.scans import security_scan_request
from audits.ledger.selectors import last_payload
from audits.ledger.services import ledger_append
from common.errors import DomainError

logger = logging.getLogger(__name__)


def audits_rescan_due(*, actor: Any) -> list[Any]:
    """Re-run, as scheduled runs, every profile that sets ``rescan_every_days`` on the model
    versions whose latest completed run under it finished longer ago than that (the versions in
    use: those audited before). A run already queued or running for the same version and profile
    is left to finish; one still waiting for approval does not hold the schedule back (it may be
    rejected and never run); a failed or cancelled run does not count, so one lost worker does not
    stop re-scans.
    A bias evaluation is re-run with the data, template, fields, mapping and legal-basis record
    of that latest completed run.

    A re-run refused when requested (its data no longer usable, its weights changed) is logged and
    recorded as ``<kind>.rescan_skipped`` on the run it would have repeated, with the reason; the
    others still start. It is tried again at the next pass, which logs it again but records it
    again only if the reason changed (one entry per reason, not one per pass)."""
    started = []
    for model, kind in ((SecurityScan, "security"), (BiasEvaluation, "bias")):
        for name, profile in profiles.profiles(kind).items():
            days = profile.get("rescan_every_days")
            if not days:
                continue
            due = timezone.now() - timezone.timedelta(days=days)
            open_versions = set(
                model.objects.filter(profile_name=name, state__in=(AuditState.QUEUED, AuditState.RUNNING)).values_list(
                    "model_version_id", flat=True
                )
            )
            latest_by_version: dict[int, Any] = {}
            completed = model.objects.filter(profile_name=name, state=AuditState.COMPLETED).select_related(
                "project", "model_version__model"
            )
            for audit in completed.order_by("finished_at", "pk"):
                latest_by_version[audit.model_version_id] = audit
            for version_id, audit in latest_by_version.items():
                if version_id in open_versions or audit.finished_at > due:
                    continue
                try:
                    started.append(_rescan(model, audit, actor))
                except DomainError as exc:
                    _rescan_skipped(audit, actor, exc)
    return started


def _rescan(model: type[Model], audit: Any, actor: Any) -> Any:
    if model is SecurityScan:
        return security_scan_request(
            actor=actor, model_version=audit.model_version, profile_name=audit.profile_name, trigger=Trigger.SCHEDULE
        )
    return bias_evaluation_request(
        actor=actor, model_version=audit.model_version, dataset_version=audit.dataset_version,
        prompt_template=audit.prompt_template, label_field=audit.label_field,
        sensitive_feature=audit.sensitive_feature, label_mapping=audit.label_mapping,
        profile_name=audit.profile_name, trigger=Trigger.SCHEDULE, special_category=audit.special_category,
        legal_basis=audit.legal_basis, safeguards_confirmed=audit.safeguards_confirmed,
    )  # fmt: skip


def _rescan_skipped(audit: SecurityScan | BiasEvaluation, actor: Any, exc: DomainError) -> None:
    kind = KINDS[type(audit)]
    reason = f"{exc.code}: {exc.message}"
    logger.warning(
        "%s of model version %s under profile %r: re-run refused (%s)",
        kind, audit.model_version_id, audit.profile_name, reason,
    )  # fmt: skip
    last = last_payload(f"{kind}.rescan_skipped", kind, str(audit.pk))
    if last is not None and last.get("reason") == reason:
        return  # recorded at an earlier pass, for the same reason
    with transaction.atomic():
        ledger_append(
            actor=actor, action=f"{kind}.rescan_skipped", subject=_subject(audit),
            payload={"model_version": audit.model_version_id, "profile": audit.profile_name, "reason": reason},
        )  # fmt: skip
