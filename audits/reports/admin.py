"""Admin pages of the reports: compliance officers generate, follow, list and download reports.
Generation goes through ``report_request`` like the API; rows are never edited here."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from audits.reports.factsheet_admin import attach_factsheet_column, factsheet_urls
from audits.reports.inventory.admin import inventory_urls
from audits.reports.models import ReportKind, ReportRun, ReportState
from audits.reports.selectors import READERS
from common.admin import PROJECT_FILTER, ReadOnlyAdmin
from common.errors import DomainError
from common.security_log import refusal
from governance.models import Project
from governance.selectors import project_list
from registry.models import ModelVersion
from systems.models import AISystem


class GenerateForm(forms.Form):
    kind = forms.ChoiceField(choices=ReportKind.choices)
    project = forms.ModelChoiceField(queryset=Project.objects.none())
    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(), required=False,
        help_text="for Annex IV and DPIA: the model version documented (of the project chosen)",
    )  # fmt: skip
    ai_system = forms.ModelChoiceField(
        queryset=AISystem.objects.none(), required=False, label="AI system",
        help_text="for the Annex IV of an AI system: the system documented (of the project chosen)",
    )  # fmt: skip
    period_start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    period_end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))


# A label's parenthesised reference ("(GDPR Art. 30(1))", "(EU AI Act Annex IV)"), one level of nesting.
_LEGAL_REFERENCE = re.compile(r" \((?:[^()]|\([^()]*\))*\)")


@admin.register(ReportRun)
class ReportRunAdmin(ReadOnlyAdmin):
    # Seven short columns, so the download stays on screen beside the filters at 1280 px.
    list_display = ["report", "project", "period", "state", "progress_bar", "requested", "download"]
    list_display_links = ["report"]
    list_filter = ["kind", "state", PROJECT_FILTER]
    list_select_related = ["project", "requested_by"]

    def get_queryset(self, request: HttpRequest) -> Any:
        from audits.reports.selectors import report_list

        return report_list(user=request.user)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        from audits.reports.inventory.admin import may_view_inventory

        extra_context = {**(extra_context or {}), "may_view_inventory": may_view_inventory(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[Any]:
        own = [
            path("generate/", self.admin_site.admin_view(self.generate_view), name="reports_reportrun_generate"),
            path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="reports_reportrun_pdf"),
            *factsheet_urls(self.admin_site),  # a model version's factsheet: factsheet_admin.py
            *inventory_urls(self.admin_site),  # the inventory at a time: inventory/admin.py
        ]
        return own + super().get_urls()

    @admin.display(description="report", ordering="kind")
    def report(self, run: ReportRun) -> str:
        label = run.get_kind_display()
        # Without the legal reference, and what it documents kept: "Technical documentation of an
        # AI system", not the model version's "Technical documentation of a model version".
        short = _LEGAL_REFERENCE.sub("", label)
        return format_html('<span title="{}">{}</span> <span class="quiet">#{}</span>', label, short, run.pk)

    @admin.display(description="period", ordering="period_start")
    def period(self, run: ReportRun) -> str:
        return f"{run.period_start:%Y-%m-%d} to {run.period_end:%Y-%m-%d}"

    @admin.display(description="requested", ordering="created_at")
    def requested(self, run: ReportRun) -> str:
        when = f"{timezone.localtime(run.created_at):%Y-%m-%d %H:%M}"
        return format_html('{}<br><span class="quiet">{}</span>', run.requested_by, when)

    @admin.display(description="progress")
    def progress_bar(self, run: ReportRun) -> str:
        if run.state == ReportState.FAILED:
            return format_html('<span style="color:#ba2121">failed: {}</span>', run.error[:200])
        return format_html('<progress max="100" value="{}"></progress> {}% {}', run.progress, run.progress, run.step)

    @admin.display(description="PDF")
    def download(self, run: ReportRun) -> str:
        if run.state != ReportState.DONE:
            return "-"
        return format_html(
            '<a href="{}" class="report-download">download</a> ({} KB, ledger entry {})',
            reverse("admin:reports_reportrun_pdf", args=[run.pk]),
            (run.pdf_size or 0) // 1024,
            run.ledger_index,
        )

    def generate_view(self, request: HttpRequest) -> HttpResponse:
        from audits.reports.services import report_request

        projects = project_list(user=request.user, roles=READERS)
        if not projects.exists():
            raise PermissionDenied("Only compliance officers and auditors generate reports.")
        form = GenerateForm(request.POST or None)
        form.fields["project"].queryset = projects
        versions = ModelVersion.objects.filter(model__project__in=projects).select_related("model__project")
        form.fields["model_version"].queryset = versions.order_by("model__project__slug", "model__slug", "-number")
        form.fields["model_version"].label_from_instance = lambda v: (
            f"{v.model.project.slug} / {v.model.slug} v{v.number} ({v.model.name})"
        )
        systems = AISystem.objects.filter(project__in=projects).select_related("project")
        form.fields["ai_system"].queryset = systems.order_by("project__slug", "slug")
        form.fields["ai_system"].label_from_instance = lambda s: f"{s.project.slug} / {s.slug} ({s.name})"
        today = timezone.now().date()
        form.initial = {"period_start": today.replace(day=1), "period_end": today}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            version = data["model_version"]
            if version is not None and version.model.project_id != data["project"].pk:
                form.add_error("model_version", f"{version.model.slug} v{version.number} is not of {data['project']}")
            system = data["ai_system"]
            if system is not None and system.project_id != data["project"].pk:
                form.add_error("ai_system", f"{system.slug} is not of {data['project']}")
            if not form.errors:
                try:
                    run = report_request(
                        actor=request.user, kind=data["kind"], project=data["project"], model_version=version,
                        ai_system=system, period_start=data["period_start"], period_end=data["period_end"],
                    )  # fmt: skip
                except DomainError as exc:
                    refusal(request, exc, report_kind=data["kind"])
                    form.add_error(None, exc.message)
                else:
                    messages.success(
                        request, f"{run.get_kind_display()} queued (report {run.report_id}); its progress shows below."
                    )
                    return HttpResponseRedirect(reverse("admin:reports_reportrun_changelist"))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Generate a report"}
        return TemplateResponse(request, "admin/reports/generate.html", context)

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        from audits.reports.services import report_pdf

        run = get_object_or_404(self.get_queryset(request), pk=pk)
        try:
            pdf = report_pdf(run)
        except DomainError as exc:
            refusal(request, exc, report_run=run.pk)
            messages.error(request, exc.message)
            return HttpResponseRedirect(reverse("admin:reports_reportrun_changelist"))
        import io

        return FileResponse(io.BytesIO(pdf), as_attachment=True, filename=f"{run.kind}-{run.report_id}.pdf",
                            content_type="application/pdf")  # fmt: skip


attach_factsheet_column(admin.site)
