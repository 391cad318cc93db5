"""Serving's governed subject (``deployment``) and its evidence checks, plugged into governance."""

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


def _deployment(pk: str) -> Any:
    from serving.models import Deployment

    # ASCII digits only ("²".isdigit() is true, and int() refuses it), and an id the column holds.
    text = str(pk)
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        return None
    return (
        Deployment.objects.select_related("project", "model_version__model", "ai_system__classification")
        .filter(pk=int(text))
        .first()
    )


def _describe(deployment: Any) -> dict[str, Any]:
    return {
        "name": deployment.name, "environment": deployment.environment,
        "model_version": f"{deployment.model_version.model} v{deployment.model_version.number}",
        "weights_digest": deployment.model_version.weights_digest, "target": deployment.target,
        "guard": deployment.guard,
    }  # fmt: skip


def _deployment_facts(deployment: Any) -> list[Fact]:
    """What is deployed where: the model version and its training data (the lineage), the
    environment, the resources and the runtime guard. The audits' verdicts on these weights
    follow, from the audits app."""
    from registry.selectors import lineage_of_model_version

    version = deployment.model_version
    target = deployment.target or {}
    guard = deployment.guard or {}
    facts = [
        Fact("state", deployment.get_state_display()),
        Fact("model version", f"{version} ({version.weights_digest})", link=version),
        Fact("environment", f"{deployment.get_environment_display()}, runtime {deployment.runtime}"),
        Fact(
            "resources", ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(target.items())) or "-"
        ),
        Fact(
            "runtime guard",
            f"{guard.get('mode', 'off')}" + (f" on {', '.join(guard['entities'])}" if guard.get("entities") else ""),
        ),
    ]
    if deployment.previous_id:
        facts.append(Fact("replaces", str(deployment.previous), link=deployment.previous))
    system = deployment.ai_system
    if system is None:
        facts.append(Fact("AI system", "none named: not part of a registered AI system"))
    else:
        tone = {"high": "warning", "prohibited": "bad", "unclassified": "bad"}.get(system.risk_class, "")
        facts.append(Fact("AI system", f"{system.name} ({system}): {system.get_risk_class_display()}", system, tone))
    lineage = lineage_of_model_version(version)
    facts += [
        Fact("trained on", str(dataset_version), link=dataset_version)
        for dataset_version in lineage["dataset_versions"]
    ]
    return facts


def _deployment_context(deployment: Any) -> dict[str, str]:
    """The environment, and the risk class of the deployment's AI system (``systems.governed``):
    a high-risk system's production deployment matches the stricter rule."""
    from systems.governed import deployment_risk_context

    return {"environment": deployment.environment, **deployment_risk_context(deployment)}


def _waiver_scope(deployment: Any) -> dict[str, str]:
    return {"environment": deployment.environment, "deployment": str(deployment.pk)}


def _on_approved(deployment: Any, action: str, actor: Any) -> None:
    """Each action's hook: a deployment starts; an approved feedback export goes to the worker."""
    from serving.services import on_deployment_approved
    from serving.services.preference import on_feedback_export_approved

    on_deployment_approved(deployment, action, actor)
    on_feedback_export_approved(deployment, action, actor)


def register() -> None:
    from audits.checks.services import bias_within_bounds, security_scan_passed
    from serving.models import Deployment
    from serving.rules import deployment_digest
    from serving.selectors import training_data_approved

    register_subject_type(
        SubjectType(
            name="deployment", get=_deployment, project=lambda d: d.project, digest=deployment_digest,
            describe=_describe, actions=("deployment.deploy", "deployment.export_feedback"),
            context=_deployment_context,
            on_approved=_on_approved,
            authors=lambda d: [d.requested_by_id], authors_by_id=authors_by_field(Deployment, "requested_by"),
            names_by_id=names_by_pk(Deployment, "project"),
        )
    )  # fmt: skip
    register_summary("deployment", _deployment_facts)
    # The audits of the deployment's model version, asked of the deployment.
    # A waiver counts for a deployment only within its scope: the deployment's environment and id.
    register_check(
        "security_scan_passed", "deployment",
        lambda d, **p: security_scan_passed(d.model_version, scope=_waiver_scope(d), **p), PARAMS,
    )  # fmt: skip
    register_check(
        "bias_within_bounds", "deployment",
        lambda d, **p: bias_within_bounds(d.model_version, scope=_waiver_scope(d), **p), PARAMS,
    )  # fmt: skip
    register_check("training_data_approved", "deployment", training_data_approved)
