"""Prompt templates and chains, versioned by content."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common.digests import canonical_digest
from common.errors import DomainError
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role


def prompt_template_register(
    *, actor: Any, project: Project, slug: str, body: Any, intended_use: str, kind: str = "template"
) -> tuple[Any, bool]:
    """A new version of a prompt template (``body`` a string) or chain (``body`` a list of steps);
    the same content again gives the existing version back."""
    from registry.models import PromptTemplate

    require_project_role(actor, project, {Role.ML_ENGINEER}, "registering a prompt template")
    if kind == "template" and not (isinstance(body, str) and body.strip()):
        raise DomainError("invalid_input", "a template's body is non-empty text", fields={"body": ["expected text"]})
    if kind == "chain" and not (
        isinstance(body, list) and body and all(isinstance(s, str) and s.strip() for s in body)
    ):
        raise DomainError(
            "invalid_input", "a chain's body is a list of step texts", fields={"body": ["expected a list"]}
        )
    if kind not in ("template", "chain"):
        raise DomainError("invalid_input", "kind is template or chain", fields={"kind": [f"got {kind!r}"]})
    if not intended_use.strip():
        raise DomainError("invalid_input", "state the intended use", fields={"intended_use": ["may not be blank"]})
    digest = canonical_digest({"kind": kind, "body": body})
    with transaction.atomic():
        existing = PromptTemplate.objects.filter(project=project, slug=slug, content_digest=digest).first()
        if existing is not None:
            return existing, False
        latest = PromptTemplate.objects.filter(project=project, slug=slug).order_by("-version").first()
        template = PromptTemplate.objects.create(
            project=project, slug=slug, version=(latest.version + 1) if latest else 1, kind=kind, body=body,
            content_digest=digest, intended_use=intended_use, owner=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="prompt_template.registered",
            subject=Subject("prompt_template", str(template.pk), digest),
            payload={"slug": slug, "version": template.version, "kind": kind, "intended_use": intended_use},
        )  # fmt: skip
    return template, True
