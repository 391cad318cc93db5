"""GPU quotas: a project's GPU-hours, set by its platform admins and held by the runs it requests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, PermissionDenied
from governance.models import Project
from governance.permissions import can_administer
from training.models import GpuQuota
from training.rules import _decimal, _invalid
from training.selectors import gpu_usage


def _lock_quota(project: Project) -> None:
    """Serialise the readers and writers of one project's GPU-hours (PostgreSQL: a row lock on the
    project; SQLite's transactions are serial already): two requests checked against the same
    hours left would both pass."""
    Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).first()


def _check_quota(project: Project, hours: Decimal) -> None:
    """Refuse ``hours`` more GPU-hours when the project has not that many left (409
    ``quota_exceeded``). Locks the project's GPU-hours first: call it inside the transaction that
    then holds them (a run request, or a run queued again)."""
    _lock_quota(project)
    usage = gpu_usage(project)
    if hours > usage["available"]:
        raise Conflict(
            "quota_exceeded",
            f"{hours} GPU-hours would exceed the GPU quota of {project.slug}: {usage['quota']} in all, "
            f"{usage['requested']} requested by open runs, {usage['used']} used, {usage['available']} left",
        )


def gpu_quota_set(*, actor: Any, project: Project, gpu_hours: Any, reason: str) -> GpuQuota:
    """Set a project's GPU-hour quota (its platform admins, or a global admin), with a reason."""
    if not can_administer(actor, project):
        raise PermissionDenied("permission_denied", f"setting the GPU quota of {project.slug} needs platform_admin")
    hours = _decimal("gpu_hours", gpu_hours, minimum=Decimal(0))
    if not reason.strip():
        raise _invalid("reason", "may not be blank")
    with transaction.atomic():
        _lock_quota(project)
        previous = GpuQuota.objects.filter(project=project).first()
        old = previous.gpu_hours if previous else None
        quota, _ = GpuQuota.objects.update_or_create(
            project=project, defaults={"gpu_hours": hours, "updated_by": actor}
        )
        ledger_append(
            actor=actor, action="gpu_quota.set", subject=Subject("project", str(project.pk)),
            payload={"project": project.slug, "gpu_hours": str(hours),
                     "previous": str(old) if old is not None else None, "reason": reason},
        )  # fmt: skip
    return quota
