"""Reads of the model audits; each takes the user and returns only what that user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from audits.checks.models import BiasEvaluation, SecurityScan
from common.errors import NotFound
from governance.selectors import project_list
from registry.models import ModelVersion


def model_version_get(*, user: Any, pk: int) -> ModelVersion:
    version = (
        ModelVersion.objects.select_related("model__project")
        .filter(pk=pk, model__project__in=project_list(user=user))
        .first()
    )
    if version is None:
        raise NotFound("not_found", f"no model version {pk}")
    return version


def audit_list(model: type[SecurityScan] | type[BiasEvaluation], *, user: Any) -> QuerySet[Any]:
    return model.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "model_version__model", "requested_by"
    )


def audit_get(model: type[SecurityScan] | type[BiasEvaluation], *, user: Any, pk: int) -> Any:
    audit = audit_list(model, user=user).filter(pk=pk).first()
    if audit is None:
        raise NotFound("not_found", f"no {model._meta.verbose_name} {pk}")
    return audit


def audit_approvals(kind: str, audit: Any) -> list[Any]:
    """Approval requests about the audit (runs and waivers), newest first."""
    from governance.models import ApprovalRequest

    return list(
        ApprovalRequest.objects.filter(subject_type=kind, subject_id=str(audit.pk))
        .select_related("project", "requester")
        .prefetch_related("decisions__approver")
        .order_by("-created_at")
    )


def latest_audits_of(model_version: ModelVersion) -> list[Any]:
    """The latest security scan of these exact weights under each profile, then the latest bias
    evaluation under each profile and sensitive feature: what a decider reads of a model before
    deploying it (the policy's evidence checks judge them; this shows them)."""
    latest: dict[tuple[str, ...], Any] = {}
    for model in (SecurityScan, BiasEvaluation):
        for audit in model.objects.filter(
            model_version=model_version, weights_digest=model_version.weights_digest
        ).order_by("-created_at", "-pk")[:100]:
            key = (model.__name__, audit.profile_name, getattr(audit, "sensitive_feature", ""))
            latest.setdefault(key, audit)
    return list(latest.values())
