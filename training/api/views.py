from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import CommandView, ListView, ReasonInputSerializer, validated
from common.errors import DomainError, NotFound
from governance.permissions import require_project_role
from governance.roles import Role
from registry import selectors as registry_selectors
from training import selectors, services
from training.api.serializers import (
    GpuQuotaSerializer,
    GpuQuotaSetSerializer,
    OptimisationRunCreateSerializer,
    OptimisationRunDetailSerializer,
    OptimisationRunSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunSerializer,
)
from training.models import FineTuneRun, OptimisationRun

ERRORS = {
    400: OpenApiResponse(description="invalid input"),
    403: OpenApiResponse(description="your role in the project does not allow this"),
    404: OpenApiResponse(description="no such run, dataset or model version, or not in a project of yours"),
    409: OpenApiResponse(description="the fine-tune run's current state does not allow this"),
    422: OpenApiResponse(description="a policy or domain rule forbids it (the message names the rule)"),
}


def _detail(run: object) -> dict[str, object]:
    run.approvals_loaded = selectors.run_approvals(run)  # type: ignore[attr-defined]
    return RunDetailSerializer(run).data


class ProjectRunsView(ListView):
    """The project's fine-tune runs, newest first."""

    serializer_class = RunSerializer
    list_operation_id = "fine_tune_runs_list"

    def get_queryset(self) -> QuerySet[FineTuneRun]:
        project = registry_selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        # What each run's digest reads: its template, its versions with their datasets' names.
        runs = selectors.run_list(user=self.request.user, project=project).select_related("prompt_template")
        return runs.prefetch_related("dataset_versions__dataset__project")

    @extend_schema(
        operation_id="fine_tune_runs_create", request=RunCreateSerializer,
        responses={201: RunDetailSerializer, **ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Request a fine-tune run (ML engineers). Submit it for approval next (``…/submit`` with
        ``action: fine_tune_run.execute``); it is queued when approved."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        require_project_role(request.user, project, {Role.ML_ENGINEER}, "requesting a fine-tune run")
        data = validated(RunCreateSerializer, request)

        def one(get: Callable[..., Any], pk: int | None, field: str) -> Any:
            """The object the body names, through a selector of what the caller may see: one in a
            project the caller holds no role in answers exactly like one that does not exist."""
            if pk is None:
                return None
            try:
                return get(user=request.user, pk=pk)
            except NotFound:
                raise DomainError(
                    "invalid_input", f"{field}: no such object {pk}", fields={field: [f"no {pk}"]}
                ) from None

        base = one(registry_selectors.model_version_get, data["base_model_version"], "base_model_version")
        versions = [
            one(registry_selectors.version_get, pk, "dataset_versions")
            for pk in dict.fromkeys(data["dataset_versions"])
        ]
        run = services.fine_tune_run_request(
            actor=request.user, project=project, name=data["name"], base=base, dataset_versions=versions,
            prompt_template=one(registry_selectors.prompt_template_get, data.get("prompt_template"), "prompt_template"),
            text_field=data["text_field"], hyperparameters=data["hyperparameters"], gpu_type=data["gpu_type"],
            gpu_count=data["gpu_count"], gpu_hours_estimate=data["gpu_hours_estimate"],
        )  # fmt: skip
        return Response(_detail(selectors.run_get(user=request.user, pk=run.pk)), status=status.HTTP_201_CREATED)


class RunDetailView(APIView):
    @extend_schema(operation_id="fine_tune_runs_retrieve", responses={200: RunDetailSerializer, 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        """A run with its approvals, live state (progress, heartbeat), metrics and output."""
        return Response(_detail(selectors.run_get(user=request.user, pk=pk)))


class _RunCommand(CommandView):
    output_serializer = RunDetailSerializer
    errors = ERRORS

    def target(self, request: Request, pk: int) -> FineTuneRun:
        return selectors.run_get(user=request.user, pk=pk)

    def answer(self, run: FineTuneRun) -> Any:
        return _detail(selectors.run_get(user=self.request.user, pk=run.pk))  # as the service left it


class RunStartView(_RunCommand):
    """Queue an approved run again after a failure (a new attempt)."""

    operation_id = "fine_tune_runs_start"

    def run(self, request: Request, run: FineTuneRun, data: dict[str, Any]) -> FineTuneRun:
        services.fine_tune_run_start(actor=request.user, run=run)
        return run


class RunCancelView(_RunCommand):
    """Cancel a run; a running one stops at its worker's next heartbeat (within about a second)."""

    operation_id = "fine_tune_runs_cancel"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, run: FineTuneRun, data: dict[str, Any]) -> FineTuneRun:
        services.fine_tune_run_cancel(actor=request.user, run=run, reason=data["reason"])
        return run


class GpuQuotaView(APIView):
    @extend_schema(operation_id="gpu_quota_retrieve", responses={200: GpuQuotaSerializer, 404: ERRORS[404]})
    def get(self, request: Request, slug: str) -> Response:
        """The project's GPU-hours: quota, requested by open runs, used, available."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        return Response(GpuQuotaSerializer({"project": project.slug, **services.gpu_usage(project)}).data)

    @extend_schema(
        operation_id="gpu_quota_set", request=GpuQuotaSetSerializer, responses={200: GpuQuotaSerializer, **ERRORS}
    )
    def put(self, request: Request, slug: str) -> Response:
        """Set the project's GPU-hour quota (platform admins), with a reason."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        data = validated(GpuQuotaSetSerializer, request)
        services.gpu_quota_set(actor=request.user, project=project, gpu_hours=data["gpu_hours"], reason=data["reason"])
        return Response(GpuQuotaSerializer({"project": project.slug, **services.gpu_usage(project)}).data)


OPTIMISATION_ERRORS = {
    **ERRORS,
    404: OpenApiResponse(description="no such optimisation run or project, or not in a project of yours"),
    409: OpenApiResponse(description="the optimisation run's current state does not allow this, or no approval holds"),
}


def _optimisation_detail(run: OptimisationRun) -> dict[str, object]:
    run.approvals_loaded = selectors.optimisation_run_approvals(run)  # type: ignore[attr-defined]
    return OptimisationRunDetailSerializer(run).data


def _named(request: Request, get: Callable[..., Any], pk: int, field: str) -> Any:
    """The object a body's field names, through a selector of what the caller may see: one in a
    project the caller holds no role in answers exactly like one that does not exist (400)."""
    try:
        return get(user=request.user, pk=pk)
    except NotFound:
        raise DomainError("invalid_input", f"{field}: no such object {pk}", fields={field: [f"no {pk}"]}) from None


class ProjectOptimisationRunsView(ListView):
    """The project's optimisation runs (int8 quantisations of its model versions), newest first,
    with their measured figures once succeeded."""

    serializer_class = OptimisationRunSerializer
    list_operation_id = "optimisation_runs_list"

    def get_queryset(self) -> QuerySet[OptimisationRun]:
        project = registry_selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.optimisation_run_list(user=self.request.user, project=project)

    @extend_schema(
        operation_id="optimisation_runs_create", request=OptimisationRunCreateSerializer,
        responses={201: OptimisationRunDetailSerializer, **OPTIMISATION_ERRORS},
    )  # fmt: skip
    def post(self, request: Request, slug: str) -> Response:
        """Request an optimisation run (ML engineers): ONNX Runtime dynamic int8 quantisation of a
        model version, measured on an evaluation set. With ``submit: true`` its approval request
        (``optimisation_run.execute``) is opened in the same transaction (a refusal of either
        leaves neither); otherwise submit it next (``…/submit``). It is queued when approved."""
        project = registry_selectors.project_get(user=request.user, slug=slug)
        require_project_role(request.user, project, {Role.ML_ENGINEER}, "requesting an optimisation run")
        data = validated(OptimisationRunCreateSerializer, request)
        arguments = {
            "actor": request.user, "project": project,
            "source": _named(request, registry_selectors.model_version_get, data["source"], "source"),
            "evaluation_set": _named(request, registry_selectors.version_get, data["evaluation_set"], "evaluation_set"),
            "method": data["method"], "text_field": data["text_field"], "max_length": data["max_length"],
        }  # fmt: skip
        if data["submit"]:
            run, _ = services.optimisation_run_request_submit(comment=data["comment"], **arguments)
        else:
            run = services.optimisation_run_request(**arguments)
        answer = _optimisation_detail(selectors.optimisation_run_get(user=request.user, pk=run.pk))
        return Response(answer, status=status.HTTP_201_CREATED)


class OptimisationRunDetailView(APIView):
    @extend_schema(
        operation_id="optimisation_runs_retrieve",
        responses={200: OptimisationRunDetailSerializer, 404: OPTIMISATION_ERRORS[404]},
    )
    def get(self, request: Request, pk: int) -> Response:
        """An optimisation run with its approvals, state, measured figures (perplexity fp32 and
        int8, their relative delta, sizes, latency) and the quantised version it registered."""
        return Response(_optimisation_detail(selectors.optimisation_run_get(user=request.user, pk=pk)))


class _OptimisationCommand(CommandView):
    output_serializer = OptimisationRunDetailSerializer
    errors = OPTIMISATION_ERRORS

    def target(self, request: Request, pk: int) -> OptimisationRun:
        return selectors.optimisation_run_get(user=request.user, pk=pk)

    def answer(self, run: OptimisationRun) -> Any:
        return _optimisation_detail(selectors.optimisation_run_get(user=self.request.user, pk=run.pk))


class OptimisationRunStartView(_OptimisationCommand):
    """Queue an approved optimisation run again after a failure (ML engineers; a new attempt under a
    new idempotency key): 409 ``run_not_startable`` unless requested or failed, ``not_approved``
    when no approval holds for the run as it is now."""

    operation_id = "optimisation_runs_start"

    def run(self, request: Request, run: OptimisationRun, data: dict[str, Any]) -> OptimisationRun:
        services.optimisation_run_start(actor=request.user, run=run)
        return run


class OptimisationRunCancelView(_OptimisationCommand):
    """Cancel an optimisation run that no worker has started (the requester, ML engineers or
    platform admins, with a reason): 409 ``run_running`` while a worker runs it (it ends within
    minutes, or the reaper fails it), ``run_closed`` once it has ended."""

    operation_id = "optimisation_runs_cancel"
    input_serializer = ReasonInputSerializer

    def run(self, request: Request, run: OptimisationRun, data: dict[str, Any]) -> OptimisationRun:
        services.optimisation_run_cancel(actor=request.user, run=run, reason=data["reason"])
        return run
