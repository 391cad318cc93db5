"""Serving's governed subject (``deployment``) and its evidence checks, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import SubjectType, register_subject_type

PARAMS = {"profile": str, "max_age_days": int}


def _deployment(pk: str) -> Any:
    from serving.models import Deployment

    # ASCII digits only ("²".isdigit() is true, and int() refuses it), and an id the column holds.
    text = str(pk)
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        return None
    return Deployment.objects.select_related("project", "model_version__model").filter(pk=int(text)).first()


def _describe(deployment: Any) -> dict[str, Any]:
    return {
        "name": deployment.name, "environment": deployment.environment,
        "model_version": f"{deployment.model_version.model} v{deployment.model_version.number}",
        "weights_digest": deployment.model_version.weights_digest, "target": deployment.target,
        "guard": deployment.guard,
    }  # fmt: skip


def register() -> None:
    from audits.checks.services import bias_within_bounds, security_scan_passed
    from serving.services import deployment_digest, on_deployment_approved, training_data_approved

    register_subject_type(
        SubjectType(
            name="deployment", get=_deployment, project=lambda d: d.project, digest=deployment_digest,
            describe=_describe, context=lambda d: {"environment": d.environment}, on_approved=on_deployment_approved,
            authors=lambda d: [d.requested_by_id],
        )
    )  # fmt: skip
    # The audits of the deployment's model version, asked of the deployment.
    register_check(
        "security_scan_passed", "deployment", lambda d, **p: security_scan_passed(d.model_version, **p), PARAMS
    )
    register_check("bias_within_bounds", "deployment", lambda d, **p: bias_within_bounds(d.model_version, **p), PARAMS)
    register_check("training_data_approved", "deployment", training_data_approved)
