"""Admin pages of training: runs (live state, metrics, approvals, output) and GPU quotas.
Read-only; a run is cancelled through the same service as the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from common.admin import PROJECT_FILTER
from common.errors import DomainError
from common.security_log import refusal
from governance.admin import ProjectScopedAdmin
from training.models import FineTuneRun, GpuQuota


@admin.register(FineTuneRun)
class FineTuneRunAdmin(ProjectScopedAdmin):
    list_display = ["id", "name", "project", "state", "progress_summary", "gpu_count", "gpu_type", "requested_by",
                    "created_at", "output"]  # fmt: skip
    list_filter = ["state", PROJECT_FILTER, "queue", "cpu_fallback", "created_at"]
    list_select_related = ["project", "requested_by", "output__model"]
    search_fields = ["name", "failure_reason"]
    readonly_fields = ["run_digest", "approvals", "usage"]
    actions = ["cancel"]

    @admin.display(description="progress")
    def progress_summary(self, run: FineTuneRun) -> str:
        loss = run.progress.get("loss")
        if not isinstance(loss, int | float):
            return "-"
        return f"step {run.progress.get('step')}/{run.progress.get('total_steps')}, loss {loss:.4f}"

    @admin.display(description="digest")
    def run_digest(self, run: FineTuneRun) -> str:
        from training.services import fine_tune_run_digest

        return fine_tune_run_digest(run)

    @admin.display(description="approval requests")
    def approvals(self, run: FineTuneRun) -> str:
        from training.selectors import run_approvals

        rows = [
            (
                reverse("admin:governance_approvalrequest_change", args=[r.pk]),
                r.pk,
                r.state,
                f"{r.created_at:%Y-%m-%d %H:%M}",
            )
            for r in run_approvals(run)
        ]
        return format_html_join(mark_safe("<br>"), '<a href="{}">#{}</a> {} ({})', rows) or "-"

    @admin.display(description="project GPU-hours")
    def usage(self, run: FineTuneRun) -> str:
        from training.services import gpu_usage

        u = gpu_usage(run.project)
        return f"quota {u['quota']}, requested {u['requested']}, used {u['used']}, available {u['available']}"

    @admin.action(description="Cancel the selected runs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[FineTuneRun]) -> None:
        from training.services import fine_tune_run_cancel

        for run in queryset:
            try:
                fine_tune_run_cancel(actor=request.user, run=run, reason="cancelled in the admin")
            except DomainError as exc:
                refusal(request, exc, fine_tune_run=run.pk)
                messages.error(request, f"run {run.pk}: {exc.message}")
            else:
                messages.success(request, f"run {run.pk}: cancelled (a running run stops at its next heartbeat)")


@admin.register(GpuQuota)
class GpuQuotaAdmin(ProjectScopedAdmin):
    list_display = ["project", "gpu_hours", "requested", "used", "available", "updated_by", "updated_at"]
    list_select_related = ["project", "updated_by"]

    def _usage(self, quota: GpuQuota) -> dict[str, Any]:
        from training.services import gpu_usage

        return gpu_usage(quota.project)

    @admin.display(description="requested by open runs")
    def requested(self, quota: GpuQuota) -> Any:
        return self._usage(quota)["requested"]

    @admin.display(description="used")
    def used(self, quota: GpuQuota) -> Any:
        return self._usage(quota)["used"]

    @admin.display(description="available")
    def available(self, quota: GpuQuota) -> Any:
        return self._usage(quota)["available"]
