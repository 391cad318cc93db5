"""Admin pages of serving: deployments with their grants, live state and inference-log summaries.
Read-only; retirement goes through the same service as the API."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from common.admin import PROJECT_FILTER
from common.errors import DomainError
from common.security_log import refusal
from governance.admin import ProjectScopedAdmin
from serving.models import Deployment


@admin.register(Deployment)
class DeploymentAdmin(ProjectScopedAdmin):
    list_display = ["id", "name", "environment", "project", "model_version", "state", "url", "started_at"]
    # Only the projects of deployments this admin may see (a plain filter lists every project).
    list_filter = ["state", "environment", PROJECT_FILTER, "created_at"]
    list_select_related = ["project", "model_version__model"]
    readonly_fields = ["grant_list", "log_summary", "monitoring_charts"]
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
        rows = [(s.requests, s.summary.get("statuses"), s.summary.get("guard"), s.summary.get("unreadable_lines", 0),
                 s.ledger_index) for s in deployment.log_segments.all()]  # fmt: skip
        template = "{} requests, statuses {}, guard {}, unreadable lines {} (entry {})"
        return format_html_join(mark_safe("<br>"), template, rows) or "-"

    @admin.display(description="monitoring (hourly windows of the inference log)")
    def monitoring_charts(self, deployment: Deployment) -> str:
        from serving import monitoring
        from serving.selectors import inference_log_path

        path = inference_log_path(deployment)
        if not path.is_file():
            return "-"
        feedback = [{"time": f.created_at, "request_id": str(f.request_id), "rating": f.rating}
                    for f in deployment.feedback.all()]  # fmt: skip
        records, _, unreadable = monitoring.read_log_skipping_unreadable(path)
        try:
            windows = monitoring.window_stats(records, window_s=3600, feedback=feedback)
        except ValueError as exc:
            return f"cannot chart the log: {exc}"
        if not windows:
            return "-"
        drifts = monitoring.drift_series(windows)
        at = [w.start for w in windows]
        charts = [
            monitoring.svg_line_chart(
                {"p50": list(zip(at, [w.latency_p50_ms for w in windows], strict=True)),
                 "p99": list(zip(at, [w.latency_p99_ms for w in windows], strict=True))},
                title="Latency", y_label="ms",
            ),
            monitoring.svg_line_chart(
                {"server errors": list(zip(at, [w.error_rate for w in windows], strict=True)),
                 "guard hits": list(zip(at, [w.guard_hit_rate for w in windows], strict=True))},
                title="Error and guard-hit rates", y_label="share of requests",
            ),
            monitoring.svg_line_chart(
                {"PSI": list(zip(at, [d.prompt_chars_psi for d in drifts], strict=True))},
                title="Prompt-length drift against the first window (PSI; above 0.25 is significant)",
                y_label="PSI",
            ),
            monitoring.svg_bar_chart(
                {"first window": list(windows[0].prompt_chars_histogram),
                 "last window": list(windows[-1].prompt_chars_histogram)},
                title="Prompt length (characters)", y_label="share of requests", normalise=True,
            ),
        ]  # fmt: skip
        note = f"<p>{unreadable} unreadable log line(s) left out</p>" if unreadable else ""
        # The charts are built from numbers and escaped labels (serving.monitoring escapes every text).
        return mark_safe(note + "".join(f"<div>{chart}</div>" for chart in charts))  # noqa: S308

    @admin.action(description="Retire the selected deployments")
    def retire(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        from serving.services import deployment_retire

        for deployment in queryset:
            try:
                deployment_retire(actor=request.user, deployment=deployment, reason="retired in the admin")
            except DomainError as exc:
                refusal(request, exc, deployment=deployment.pk)
                messages.error(request, f"deployment {deployment.pk}: {exc.message}")
            else:
                messages.success(request, f"deployment {deployment.pk}: retired")
