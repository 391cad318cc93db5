"""Reads of the training app; each takes the user and returns only what that user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from common.errors import NotFound
from governance.models import Project
from governance.selectors import project_list
from training.models import FineTuneRun


def run_list(*, user: Any, project: Project | None = None) -> QuerySet[FineTuneRun]:
    runs = FineTuneRun.objects.filter(project__in=project_list(user=user))
    if project is not None:
        runs = runs.filter(project=project)
    return runs.select_related("project", "base__model__project", "requested_by", "output", "cancelled_by")


def run_get(*, user: Any, pk: int) -> FineTuneRun:
    run = run_list(user=user).filter(pk=pk).first()
    if run is None:
        raise NotFound("not_found", f"no fine-tune run {pk}")
    return run


def run_approvals(run: FineTuneRun) -> list[Any]:
    """The approval requests about the run, newest first."""
    from governance.models import ApprovalRequest

    return list(
        ApprovalRequest.objects.filter(subject_type="fine_tune_run", subject_id=str(run.pk))
        .select_related("project", "requester")
        .prefetch_related("decisions__approver")
        .order_by("-created_at")
    )
