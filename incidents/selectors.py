"""Reads of the incident register. Every member of a project reads its incidents (auditors
included); an incident of a project where the caller holds no role answers 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from common.errors import NotFound
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held
from governance.selectors import project_list
from incidents.models import Incident, IncidentState
from incidents.services import OFFICER_ROLES, REGISTER_ROLES


def overdue_q(now: datetime) -> Q:
    """Serious incidents whose report deadline passed with no report filed (an initial one counts)."""
    return Q(serious=True, authority_reported_at__isnull=True, report_due_at__lt=now) & ~Q(state=IncidentState.CLOSED)


def incident_list(
    *, user: Any, state: str = "", serious: bool | None = None, overdue: bool | None = None, project: str = ""
) -> QuerySet[Incident]:
    """The incidents of the caller's projects, the nearest deadline first (no deadline last)."""
    incidents = Incident.objects.filter(project__in=project_list(user=user)).select_related(
        "project", "reported_by", "classified_by", "closed_by"
    )
    if state:
        incidents = incidents.filter(state=state)
    if serious is not None:
        incidents = incidents.filter(serious=serious)
    if overdue is not None:
        query = overdue_q(timezone.now())
        incidents = incidents.filter(query) if overdue else incidents.exclude(query)
    if project:
        incidents = incidents.filter(project__slug=project)
    return incidents.prefetch_related("ai_systems", "deployments")


def incident_get(*, user: Any, pk: int) -> Incident:
    incident = (
        Incident.objects.filter(pk=pk, project__in=project_list(user=user))
        .select_related("project", "reported_by", "classified_by", "closed_by")
        .first()
    )
    if incident is None:
        raise NotFound("not_found", f"no incident {pk}")
    return incident


def project_get(*, user: Any, slug: str) -> Project:
    project = project_list(user=user).filter(slug=slug).first()
    if project is None:
        raise NotFound("not_found", f"no project {slug!r}")
    return project


def register_projects(*, user: Any) -> QuerySet[Project]:
    """Projects where ``user`` may register incidents (every role but auditor)."""
    return project_list(user=user, roles=REGISTER_ROLES)


def may_register(*, user: Any, project: Project) -> bool:
    return is_platform_admin(user) or bool(project_roles_held(user, project) & REGISTER_ROLES)


def may_decide(*, user: Any, project: Project) -> bool:
    """Whether ``user`` may classify, report and close the project's incidents: the services' check."""
    return is_platform_admin(user) or bool(project_roles_held(user, project) & OFFICER_ROLES)
