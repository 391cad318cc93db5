"""Reads of the training app. Those that take the user return only what that user may see; the
others are the services' own reads, after their caller checked the role."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import QuerySet, Sum

from common.errors import NotFound
from governance.models import Project
from governance.selectors import project_list
from training.models import TERMINAL_STATES, FineTuneRun, GpuQuota, OptimisationRun


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
    return _approvals("fine_tune_run", run.pk)


def _approvals(subject_type: str, pk: int) -> list[Any]:
    from governance.models import ApprovalRequest

    return list(
        ApprovalRequest.objects.filter(subject_type=subject_type, subject_id=str(pk))
        .select_related("project", "requester")
        .prefetch_related("decisions__approver")
        .order_by("-created_at")
    )


def optimisation_run_list(*, user: Any, project: Project | None = None) -> QuerySet[OptimisationRun]:
    """The optimisation runs of the projects ``user`` holds a role in, with what their digests and
    answers read (the source, the evaluation set with its dataset, the output)."""
    runs = OptimisationRun.objects.filter(project__in=project_list(user=user))
    if project is not None:
        runs = runs.filter(project=project)
    return runs.select_related(
        "project", "source__model__project", "evaluation_set__dataset__project", "requested_by",
        "output__model__project",
    )  # fmt: skip


def optimisation_run_get(*, user: Any, pk: int) -> OptimisationRun:
    run = optimisation_run_list(user=user).filter(pk=pk).first()
    if run is None:
        raise NotFound("not_found", f"no optimisation run {pk}")
    return run


def optimisation_run_approvals(run: OptimisationRun) -> list[Any]:
    """The approval requests about the optimisation run, newest first."""
    return _approvals("optimisation_run", run.pk)


def gpu_usage(project: Project) -> dict[str, Decimal]:
    """The project's GPU-hours: quota, requested by open runs (estimates of their current
    attempts), used by the ended attempts of every run (``gpu_hours_used`` adds up each attempt's
    hours, so a run started again keeps the hours its earlier attempts used)."""
    quota = GpuQuota.objects.filter(project=project).values_list("gpu_hours", flat=True).first()
    runs = FineTuneRun.objects.filter(project=project)
    requested = runs.exclude(state__in=TERMINAL_STATES).aggregate(h=Sum("gpu_hours_estimate"))["h"] or Decimal(0)
    used = runs.aggregate(h=Sum("gpu_hours_used"))["h"] or Decimal(0)
    limit = Decimal(quota if quota is not None else settings.TRAINING_DEFAULT_GPU_HOURS)
    cents = Decimal("0.01")
    usage = {"quota": limit, "requested": Decimal(requested), "used": Decimal(used)}
    usage["available"] = usage["quota"] - usage["requested"] - usage["used"]
    return {name: value.quantize(cents) for name, value in usage.items()}
