"""Asking for a deployment: a model version, where it runs (``target``) and the runtime guard,
checked against their declared schemas (``serving.specs``) before a row or an entry is written."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from audits.ledger.services import ledger_append
from common.errors import PermissionDenied
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from registry.models import ModelVersion, PromptTemplate
from serving.grants import RUNTIMES
from serving.models import Deployment, Environment
from serving.rules import ACTION, deployment_subject
from serving.specs import guard_clean, invalid_input, target_clean


def deployment_request(
    *,
    actor: Any,
    model_version: ModelVersion,
    name: str,
    environment: str,
    target: dict[str, Any],
    guard: dict[str, Any],
    prompt_template: PromptTemplate | None = None,
    runtime: str = "transformers",
) -> Deployment:
    """Ask to deploy a model version (ML engineers). It starts once a policy's approvals and
    evidence are given to its digest. ``runtime`` is ``transformers`` or ``onnx`` (the worker
    exports the approved weights to ONNX and the grant names the export's digest)."""
    from django.utils.text import slugify

    project = model_version.model.project
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, project)):
        raise PermissionDenied("permission_denied", f"requesting a deployment needs ml_engineer in {project.slug}")
    if not name or slugify(name) != name:
        raise invalid_input("name", f"a slug (lowercase letters, digits, hyphens), got {name!r}")
    if environment not in Environment.values:
        raise invalid_input("environment", f"one of {', '.join(Environment.values)}, got {environment!r}")
    target, guard = target_clean(target), guard_clean(guard)
    if runtime not in RUNTIMES:
        raise invalid_input("runtime", f"one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if settings.SERVING_PLATFORM != "local":
        from serving.manifests import platform_refusal

        refusal = platform_refusal(settings.SERVING_PLATFORM, runtime, target, guard)
        if refusal is None and runtime == "onnx":
            refusal = "runtime: ONNX exports are made by the local worker; on a platform, deploy transformers weights"
        if refusal:
            field, message = refusal.split(": ", 1)
            raise invalid_input(field, f"{message} (SERVING_PLATFORM={settings.SERVING_PLATFORM})")
    if prompt_template is not None and prompt_template.project_id != project.pk:
        raise invalid_input("prompt_template", f"prompt template {prompt_template.pk} belongs to another project")
    with transaction.atomic():
        deployment = Deployment.objects.create(
            project=project, name=name, model_version=model_version, environment=environment, target=target,
            guard=guard, prompt_template=prompt_template, requested_by=actor, runtime=runtime,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="deployment.requested", subject=deployment_subject(deployment),
            payload={"name": name, "environment": environment, "weights": model_version.weights_digest,
                     "model_version": str(model_version.pk), "runtime": runtime, "target": target, "guard": guard},
        )  # fmt: skip
    return deployment


def deployment_request_submit(*, actor: Any, comment: str = "", **request: Any) -> tuple[Deployment, Any]:
    """A deployment request (``deployment_request``'s arguments) and its approval request
    (``deployment.deploy``, under the rule of its environment), in one transaction: the admin's
    "Request a deployment" page. A refusal of either leaves neither. Returns the deployment and
    the approval request."""
    from governance.services import approval_request_submit

    with transaction.atomic():
        deployment = deployment_request(actor=actor, **request)
        approval = approval_request_submit(
            actor=actor, subject_type="deployment", subject_id=str(deployment.pk), action=ACTION, comment=comment
        )
    return deployment, approval
