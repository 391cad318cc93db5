"""Reads of the reports app: report runs of the projects where the user reads reports."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from audits.reports.models import ReportRun
from common.errors import NotFound, PermissionDenied
from governance.permissions import is_platform_admin
from governance.roles import Role
from governance.selectors import project_list

READERS = (Role.COMPLIANCE_OFFICER, Role.AUDITOR)


def report_list(*, user: Any) -> QuerySet[ReportRun]:
    """Runs of the projects where ``user`` is a compliance officer or an auditor; organisation-wide
    runs for platform admins."""
    visible = Q(project__in=project_list(user=user, roles=READERS))
    if is_platform_admin(user):
        visible |= Q(project__isnull=True)
    return ReportRun.objects.filter(visible).select_related("project", "requested_by")


def report_get(*, user: Any, pk: int) -> ReportRun:
    """A run the user may read; 404 outside their projects, 403 for members without a reader role."""
    run = report_list(user=user).filter(pk=pk).first()
    if run is not None:
        return run
    if ReportRun.objects.filter(pk=pk, project__in=project_list(user=user)).exists():
        raise PermissionDenied("permission_denied", "reports are for compliance officers and auditors")
    raise NotFound("not_found", f"no report {pk}")
