"""Admin pages of the model audits: scans with their findings, evaluations with their metrics and
chart, and their waiver requests. Read-only but for cancelling one that has not started and for
requesting a waiver of one that failed, with its scope (the same services as the API); waivers
are approvals (the approval inbox)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Verdict
from common.admin import DONE, PROJECT_FILTER, call_service_for_each
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from governance.admin import ProjectScopedAdmin


class WaiverForm(forms.Form):
    """A waiver's scope and the requester's comment; the policy checks each value again."""

    environment = forms.ChoiceField(
        choices=[("staging", "staging"), ("production", "production"), ("any", "any environment")],
        help_text="Where the waiver may serve as evidence.",
    )
    deployment = forms.CharField(
        required=False, max_length=20, label="Only deployment (id)",
        help_text="Narrow it to one deployment of that environment; leave empty for all of them.",
    )  # fmt: skip
    use = forms.CharField(
        max_length=200, label="Accepted for",
        help_text="What the risk is accepted for, in words (an internal pilot, ...). " + LEDGERED_TEXT_HELP,
    )  # fmt: skip
    comment = forms.CharField(
        required=False, max_length=4000, label="Comment for the reviewers", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the findings are acceptable. " + LEDGERED_TEXT_HELP,
    )  # fmt: skip


class _AuditAdmin(ProjectScopedAdmin):
    kind = ""
    list_filter = ["state", "verdict", "profile_name", "trigger", PROJECT_FILTER, "created_at"]
    list_select_related = ["project", "model_version__model", "requested_by"]
    readonly_fields = ["audit_digest", "approvals", "waiver"]
    actions = ["cancel"]

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        own = [
            path(
                "<int:pk>/waive/", self.admin_site.admin_view(self.waive_view),
                name=f"{opts.app_label}_{opts.model_name}_waive",
            )
        ]  # fmt: skip
        return own + super().get_urls()

    def waive_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Request a waiver of this run with its scope, through ``approval_request_submit``: a
        refusal (a run that errored, a scope the policy does not admit) shows on the form."""
        from governance.admin.request_forms import TEMPLATE, show_refusal
        from governance.permissions import is_platform_admin, project_roles_held
        from governance.rules import REQUESTER_ROLES
        from governance.services import approval_request_submit

        audit = self.get_object(request, str(pk))
        if audit is None:
            raise Http404(f"no {self.kind} {pk}")
        if not (is_platform_admin(request.user) or project_roles_held(request.user, audit.project) & REQUESTER_ROLES):
            raise PermissionDenied
        form = WaiverForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            context = {key: data[key] for key in ("environment", "deployment", "use") if data[key]}
            try:
                approval = approval_request_submit(
                    actor=request.user, subject_type=self.kind, subject_id=str(audit.pk), action=f"{self.kind}.waive",
                    context=context, comment=data["comment"],
                )  # fmt: skip
            except DomainError as exc:
                show_refusal(request, form, exc, {})
            else:
                messages.success(request, f"Waiver request #{approval.pk} opened for {self.kind} {audit.pk}.")
                return HttpResponseRedirect(reverse("admin:governance_approvalrequest_change", args=[approval.pk]))
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "form": form,
            "title": f"Request a waiver of {audit}", "submit": "Request the waiver",
            "intro": f"A reviewer accepts this run's failing verdict for the scope you name, until the waiver "
            f"expires; it is evidence nowhere else. Verdict: {audit.get_verdict_display()}"
            f"{': ' + '; '.join(audit.reasons) if audit.reasons else ''}.",
        }  # fmt: skip
        return TemplateResponse(request, TEMPLATE, context)

    @admin.display(description="waiver")
    def waiver(self, audit: SecurityScan | BiasEvaluation) -> str:
        if audit.state != AuditState.COMPLETED or audit.verdict != Verdict.FAILED:
            return "only a finished run with a failing verdict is waived"
        opts = self.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_waive", args=[audit.pk])
        return format_html('<a href="{}">Request a waiver, with its scope</a>', url)

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
            (f["probe"], ", ".join(f.get("owasp") or ["-"]), f["detector"], f["passed"], f["fails"], f["nones"],
             f["total"], f"{f['failure_rate']:.3f}")
            for f in scan.findings
        ]  # fmt: skip
        head = mark_safe(
            "<table><tr><th>probe</th><th>OWASP LLM Top 10 (2025)</th><th>detector</th><th>passed</th><th>fails</th>"
            "<th>nones</th><th>total</th><th>failure rate</th></tr>"
        )
        body = format_html_join("", "<tr>" + "<td>{}</td>" * 8 + "</tr>", rows)
        return head + body + mark_safe("</table>") if rows else "-"


@admin.register(BiasEvaluation)
class BiasEvaluationAdmin(_AuditAdmin):
    kind = "bias_evaluation"
    list_display = ["id", "model_version", "profile_name", "sensitive_feature", "state", "verdict", "finished_at"]
    readonly_fields = [*_AuditAdmin.readonly_fields, "legal_basis_record", "metrics_table", "chart"]

    @admin.display(description="legal basis (special-category data)")
    def legal_basis_record(self, evaluation: BiasEvaluation) -> str:
        if not evaluation.special_category:
            return "the sensitive feature was not marked as special-category data"
        points = ", ".join(f"({point})" for point in evaluation.safeguards_confirmed) or "none"
        return (
            f"{evaluation.get_special_category_display()}: {evaluation.get_legal_basis_display()}; "
            f"safeguards confirmed: {points}"
        )

    @admin.display(description="differences with confidence intervals")
    def metrics_table(self, evaluation: BiasEvaluation) -> str:
        metrics = (evaluation.results or {}).get("metrics") or {}
        rows = [
            (name, _number(m.get("value")), _number(m.get("ci_low")), _number(m.get("ci_high")),
             f"{m.get('level', 0):.0%}", m.get("resamples"), m.get("seed"))
            for name, m in sorted(metrics.items())
        ]  # fmt: skip
        if not rows:
            return "-"
        head = mark_safe(
            "<table><tr><th>difference</th><th>value</th><th>CI low</th><th>CI high</th><th>level</th>"
            "<th>resamples</th><th>seed</th></tr>"
        )
        body = format_html_join("", "<tr>" + "<td>{}</td>" * 7 + "</tr>", rows)
        sizes = (evaluation.results or {}).get("group_sizes") or {}
        groups = format_html_join(
            ", ", "{} {}{}", ((g, s["records"], " (too small to conclude)" if s["too_small"] else "")
                              for g, s in sorted(sizes.items()))
        )  # fmt: skip
        minimum = evaluation.results.get("min_group_size")
        footer = format_html("<p>Records by group: {} (minimum {})</p>", groups, minimum)
        return head + body + mark_safe("</table>") + footer

    @admin.display(description="chart")
    def chart(self, evaluation: BiasEvaluation) -> str:
        if not evaluation.chart_digest:
            return "-"
        url = reverse("api-bias-evaluation-chart", args=[evaluation.pk])
        return format_html('<img src="{}" alt="metric by group" style="max-width: 480px">', url)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
