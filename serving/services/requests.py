"""Asking for a deployment: a model version, where it runs (``target``) and the runtime guard,
checked against their declared schemas (``serving.specs``) before a row or an entry is written."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from rest_framework import serializers

from audits.ledger.services import ledger_append
from common.errors import PermissionDenied
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role
from registry.models import ModelVersion, PromptTemplate
from serving.grants import DEFAULT_DISCLOSURE, DISCLOSURE_MAX_CHARS, RUNTIMES
from serving.models import Deployment, Environment
from serving.rules import ACTION, deployment_subject
from serving.specs import JsonObject, guard_clean, invalid_input, spec_clean, target_clean


class _Flag(serializers.Field):
    """A JSON ``true`` or ``false`` (never ``"true"`` or ``1``: DRF's own field would coerce)."""

    def __init__(self, *, default: bool | None) -> None:
        super().__init__(required=False, default=default)

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError(f"must be true or false, got {data!r}")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class _Disclosure(serializers.Field):
    """One line of text for people, kept without surrounding blanks."""

    def __init__(self) -> None:
        super().__init__(required=False, default=DEFAULT_DISCLOSURE)

    def to_internal_value(self, data: Any) -> str:
        text = data.strip() if isinstance(data, str) else None
        if not text or len(text) > DISCLOSURE_MAX_CHARS or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            raise serializers.ValidationError(
                f"one line of 1 to {DISCLOSURE_MAX_CHARS} characters, without control characters, got {data!r}"
            )
        return text

    def to_representation(self, value: Any) -> Any:
        return value


class TransparencySpec(JsonObject):
    """How the model server marks completions as AI-generated (EU AI Act Art. 50): ``mark`` (the
    response's ``ai_generated`` metadata, default on), ``header`` (the ``AI-Generated`` headers,
    default as ``mark``; only with it) and ``disclosure`` (the statement the metadata carries)."""

    mark = _Flag(default=True)
    header = _Flag(default=None)
    disclosure = _Disclosure()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        header = attrs["mark"] if attrs["header"] is None else attrs["header"]
        if header and not attrs["mark"]:
            raise serializers.ValidationError({"header": "the header marks what the metadata marks: it needs mark"})
        return {"mark": attrs["mark"], "header": header, "disclosure": attrs["disclosure"]}


def transparency_clean(raw: Any, environment: str) -> dict[str, Any]:
    """The marking as ``TransparencySpec`` declares it; unmarked output is refused in production,
    where a deployment's completions reach people who must be able to tell (Art. 50(2))."""
    transparency = spec_clean(TransparencySpec, "transparency", {} if raw is None else raw)
    if environment == Environment.PRODUCTION and not transparency["mark"]:
        raise invalid_input(
            "transparency.mark",
            "a production deployment marks its completions as AI-generated (EU AI Act Art. 50); "
            "unmarked output is allowed in staging only",
        )
    return transparency


def _ai_system_clean(ai_system: Any, project: Any) -> Any:
    """The AI system a deployment request names (id, slug or row), refused unless it is one of
    ``project``'s with an approved classification that is not prohibited (Art. 5)."""
    from systems.models import AISystem, RiskClass
    from systems.selectors import ai_system_in_project

    if ai_system is None or ai_system == "":
        return None
    if isinstance(ai_system, AISystem):
        system = ai_system if ai_system.project_id == project.pk else None
    elif isinstance(ai_system, (str, int)) and not isinstance(ai_system, bool):
        system = ai_system_in_project(project=project, ref=ai_system)
    else:
        raise invalid_input("ai_system", f"an AI system's id or slug, got {ai_system!r}")
    if system is None:
        raise invalid_input("ai_system", f"no AI system {str(ai_system)!r} in project {project.slug}")
    if system.classification_id is None:
        raise invalid_input(
            "ai_system", f"AI system {system} has no approved risk classification yet: classify it and have it approved"
        )
    if system.risk_class == RiskClass.PROHIBITED:
        raise invalid_input(
            "ai_system", f"AI system {system} is a prohibited practice (EU AI Act Art. 5): never deployed"
        )
    return system


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
    keep_transcripts: bool = False,
    transparency: dict[str, Any] | None = None,
    ai_system: Any = None,
) -> Deployment:
    """Ask to deploy a model version (ML engineers). It starts once a policy's approvals and
    evidence are given to its digest. ``runtime`` is ``transformers`` or ``onnx`` (the worker
    exports the approved weights to ONNX and the grant names the export's digest).
    ``keep_transcripts``: the server keeps each answered prompt and completion, as the guard left
    them, beside its inference log (for a preference dataset exported on approval,
    ``deployment.export_feedback``); it is part of the digest the approval vouches for.
    ``transparency``: how the server marks each completion as AI-generated (``TransparencySpec``;
    by default marked, with the headers); marking is off only in staging, and a marking other
    than the default is part of the digest and of the ``deployment.requested`` entry.
    ``ai_system``: the registered AI system (``systems``) the deployment is part of, by id, slug or
    row, in the same project, with an approved classification that is not prohibited; its class
    decides the policy rule, and the system and its classification are part of the digest."""
    from django.utils.text import slugify

    project = model_version.model.project
    if not (is_platform_admin(actor) or Role.ML_ENGINEER in project_roles_held(actor, project)):
        raise PermissionDenied("permission_denied", f"requesting a deployment needs ml_engineer in {project.slug}")
    if not name or slugify(name) != name:
        raise invalid_input("name", f"a slug (lowercase letters, digits, hyphens), got {name!r}")
    if environment not in Environment.values:
        raise invalid_input("environment", f"one of {', '.join(Environment.values)}, got {environment!r}")
    target, guard = target_clean(target), guard_clean(guard)
    if not isinstance(keep_transcripts, bool):
        raise invalid_input("keep_transcripts", f"true or false, got {keep_transcripts!r}")
    transparency = transparency_clean(transparency, environment)
    if runtime not in RUNTIMES:
        raise invalid_input("runtime", f"one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "transformers" and "model.onnx" in (model_version.files or {}):
        raise invalid_input(
            "runtime",
            f"model version {model_version.pk} is an ONNX export (a quantised version): deploy it on runtime onnx",
        )
    if settings.SERVING_PLATFORM != "local":
        from serving.manifests import platform_refusal

        refusal = platform_refusal(settings.SERVING_PLATFORM, runtime, target, guard, transparency=transparency)
        if refusal is None and runtime == "onnx":
            refusal = "runtime: ONNX exports are made by the local worker; on a platform, deploy transformers weights"
        if refusal:
            field, message = refusal.split(": ", 1)
            raise invalid_input(field, f"{message} (SERVING_PLATFORM={settings.SERVING_PLATFORM})")
    if prompt_template is not None and prompt_template.project_id != project.pk:
        raise invalid_input("prompt_template", f"prompt template {prompt_template.pk} belongs to another project")
    system = _ai_system_clean(ai_system, project)
    with transaction.atomic():
        deployment = Deployment.objects.create(
            project=project, name=name, model_version=model_version, environment=environment, target=target,
            guard=guard, prompt_template=prompt_template, requested_by=actor, runtime=runtime,
            keep_transcripts=keep_transcripts, transparency=transparency, ai_system=system,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="deployment.requested", subject=deployment_subject(deployment),
            payload={"name": name, "environment": environment, "weights": model_version.weights_digest,
                     "model_version": str(model_version.pk), "runtime": runtime, "target": target, "guard": guard,
                     **({"keep_transcripts": True} if keep_transcripts else {}), "transparency": transparency,
                     **({"ai_system": str(system.pk), "risk_class": system.risk_class} if system else {})},
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
