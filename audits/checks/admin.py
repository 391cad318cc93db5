"""Admin pages of the model audits: scans with their findings, evaluations with their metrics and
chart, and their waiver requests. Read-only but for cancelling one that has not started (the same
service as the API); waivers are approvals (the approval inbox)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audits.checks.models import BiasEvaluation, SecurityScan
from common.admin import DONE, PROJECT_FILTER, call_service_for_each
from governance.admin import ProjectScopedAdmin


class _AuditAdmin(ProjectScopedAdmin):
    kind = ""
    list_filter = ["state", "verdict", "profile_name", "trigger", PROJECT_FILTER, "created_at"]
    list_select_related = ["project", "model_version__model", "requested_by"]
    readonly_fields = ["audit_digest", "approvals"]
    actions = ["cancel"]

    @admin.action(description="Cancel the selected ones that have not started")
    def cancel(self, request: HttpRequest, queryset: QuerySet[SecurityScan] | QuerySet[BiasEvaluation]) -> None:
        from audits.checks.services import audit_cancel

        call_service_for_each(
            request, queryset,
            lambda audit: audit_cancel(actor=request.user, audit=audit, reason="cancelled in the admin"),
            name=lambda audit: f"{self.kind} {audit.pk}", refusal_fields=lambda audit: {self.kind: audit.pk},
            each={DONE: "cancelled"},
        )  # fmt: skip

    @admin.display(description="digest (what a waiver binds to)")
    def audit_digest(self, audit: SecurityScan | BiasEvaluation) -> str:
        from audits.checks.services import audit_digest

        return audit_digest(audit)

    @admin.display(description="approval requests (runs and waivers)")
    def approvals(self, audit: SecurityScan | BiasEvaluation) -> str:
        from audits.checks.selectors import audit_approvals

        rows = [
            (reverse("admin:governance_approvalrequest_change", args=[r.pk]), r.pk, r.action, r.state)
            for r in audit_approvals(self.kind, audit)
        ]
        return format_html_join(mark_safe("<br>"), '<a href="{}">#{}</a> {}: {}', rows) or "-"


@admin.register(SecurityScan)
class SecurityScanAdmin(_AuditAdmin):
    kind = "security_scan"
    list_display = ["id", "model_version", "profile_name", "state", "verdict", "trigger", "finished_at"]
    readonly_fields = [*_AuditAdmin.readonly_fields, "findings_table"]

    @admin.display(description="findings")
    def findings_table(self, scan: SecurityScan) -> str:
        rows = [
            (f["probe"], f["detector"], f["passed"], f["fails"], f["nones"], f["total"], f"{f['failure_rate']:.3f}")
            for f in scan.findings
        ]
        head = mark_safe(
            "<table><tr><th>probe</th><th>detector</th><th>passed</th><th>fails</th><th>nones</th>"
            "<th>total</th><th>failure rate</th></tr>"
        )
        body = format_html_join("", "<tr>" + "<td>{}</td>" * 7 + "</tr>", rows)
        return head + body + mark_safe("</table>") if rows else "-"


@admin.register(BiasEvaluation)
class BiasEvaluationAdmin(_AuditAdmin):
    kind = "bias_evaluation"
    list_display = ["id", "model_version", "profile_name", "sensitive_feature", "state", "verdict", "finished_at"]
    readonly_fields = [*_AuditAdmin.readonly_fields, "chart"]

    @admin.display(description="chart")
    def chart(self, evaluation: BiasEvaluation) -> str:
        if not evaluation.chart_digest:
            return "-"
        url = reverse("api-bias-evaluation-chart", args=[evaluation.pk])
        return format_html('<img src="{}" alt="metric by group" style="max-width: 480px">', url)
