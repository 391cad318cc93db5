"""Reads of the register, restricted to the projects where the caller holds a role (a system of
another project answers 404, as one that does not exist)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from common.errors import NotFound
from governance.selectors import project_list
from systems.models import AISystem, AISystemClassification


def project_get(*, user: Any, slug: str) -> Any:
    project = project_list(user=user).filter(slug=slug).first()
    if project is None:
        raise NotFound("not_found", f"no project {slug!r}")
    return project


def ai_system_list(*, user: Any, project: Any | None = None) -> QuerySet[AISystem]:
    """The systems the user may see (of one project, when given), with their counts of
    deployments and classifications."""
    systems = AISystem.objects.filter(project__in=project_list(user=user))
    if project is not None:
        systems = systems.filter(project=project)
    return systems.select_related("project", "owner", "classification").annotate(
        deployment_count=Count("deployments", distinct=True),
        classification_count=Count("classifications", distinct=True),
    )


def ai_system_get(*, user: Any, pk: int) -> AISystem:
    system = ai_system_list(user=user).filter(pk=pk).first()
    if system is None:
        raise NotFound("not_found", f"no AI system {pk}")
    return system


def ai_system_in_project(*, project: Any, ref: Any) -> AISystem | None:
    """The system of ``project`` named by id (digits) or slug; None when it names none there."""
    text = str(ref).strip()
    systems = AISystem.objects.filter(project=project).select_related("classification")
    if text.isascii() and text.isdigit():
        return systems.filter(pk=int(text)).first() if int(text) < 2**63 else None
    return systems.filter(slug=text).first()


def classification_list(*, system: AISystem) -> QuerySet[AISystemClassification]:
    return system.classifications.select_related("created_by").order_by("-number")


def classification_get(*, user: Any, pk: int) -> AISystemClassification:
    found = (
        AISystemClassification.objects.filter(pk=pk, system__project__in=project_list(user=user))
        .select_related("system__project", "created_by")
        .first()
    )
    if found is None:
        raise NotFound("not_found", f"no AI system classification {pk}")
    return found


def system_deployments(system: AISystem) -> list[Any]:
    """The deployments that make the system up (the reverse relation: serving sits above this
    floor), newest first, with their model versions."""
    return list(system.deployments.select_related("model_version__model").order_by("-pk"))


def latest_requests(classifications: list[AISystemClassification]) -> dict[str, Any]:
    """The latest approval request about each classification (subject id -> request)."""
    from governance.models import ApprovalRequest

    found: dict[str, Any] = {}
    requests = ApprovalRequest.objects.filter(
        subject_type="ai_system_classification", subject_id__in=[str(c.pk) for c in classifications]
    ).order_by("pk")
    for request in requests:
        found[request.subject_id] = request
    return found
