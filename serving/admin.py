"""Admin pages of serving: deployments with their grants, live state and inference-log summaries.
Read-only; retirement goes through the same service as the API."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from common.errors import DomainError
from governance.admin import ProjectScopedAdmin
from serving.models import Deployment


@admin.register(Deployment)
class DeploymentAdmin(ProjectScopedAdmin):
    list_display = ["id", "name", "environment", "project", "model_version", "state", "url", "started_at"]
    list_filter = ["state", "environment", "project", "created_at"]
    list_select_related = ["project", "model_version__model"]
    readonly_fields = ["grant_list", "log_summary"]
    actions = ["retire"]

    @admin.display(description="grants")
    def grant_list(self, deployment: Deployment) -> str:
        rows = [
            (g.grant_id, f"{g.issued_at:%Y-%m-%d %H:%M}", f"{g.expires_at:%Y-%m-%d %H:%M}", g.ledger_index)
            for g in deployment.grants.all()
        ]
        template = "{} issued {}, expires {} (ledger entry {})"
        return format_html_join(mark_safe("<br>"), template, rows) or "-"

    @admin.display(description="inference log (summaries in the ledger)")
    def log_summary(self, deployment: Deployment) -> str:
        rows = [(s.requests, s.summary.get("statuses"), s.summary.get("guard"), s.ledger_index)
                for s in deployment.log_segments.all()]  # fmt: skip
        return format_html_join(mark_safe("<br>"), "{} requests, statuses {}, guard {} (entry {})", rows) or "-"

    @admin.action(description="Retire the selected deployments")
    def retire(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        from serving.services import deployment_retire

        for deployment in queryset:
            try:
                deployment_retire(actor=request.user, deployment=deployment, reason="retired in the admin")
            except DomainError as exc:
                messages.error(request, f"deployment {deployment.pk}: {exc.message}")
            else:
                messages.success(request, f"deployment {deployment.pk}: retired")
