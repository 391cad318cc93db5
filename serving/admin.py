"""Admin pages of serving: deployments with their grants, live state and inference-log summaries.
Rows change only through services: an ML engineer asks for one on "Request a deployment" (the
deployment and its approval request, as the API makes them), and retirement goes through the same
service as the API. A platform admin of the deployment's project issues and revokes its client
credentials on the deployment's "Client credentials" page (the credential shown once), through the
services the API calls."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from common.admin import DONE, PROJECT_FILTER, call_service_for_each
from common.errors import DomainError
from common.security_log import refusal
from governance.admin import ProjectScopedAdmin
from governance.admin.approvals import DecisionActionForm
from governance.admin.request_forms import RequestAddMixin, comment_field, gpu_type_field
from registry.models import ModelVersion, PromptTemplate
from serving.grants import DEFAULT_DISCLOSURE, DISCLOSURE_MAX_CHARS, GUARD_MODES, RUNTIMES
from serving.models import Deployment, DeploymentAlert, Environment
from serving.rules import transparency_effective
from serving.specs import GUARD_ENTITIES
from systems.models import AISystem


class DeploymentRequestForm(forms.Form):
    """What ``deployment_request`` takes (where it runs, how big, the runtime guard), for the
    projects where the person is an ML engineer; ``serving.specs`` checks the values again."""

    name = forms.SlugField(max_length=100, help_text="A slug, e.g. support-assistant: the service's name.")
    environment = forms.ChoiceField(
        choices=Environment.choices, initial=Environment.STAGING,
        help_text="Production asks for more approvals and evidence than staging (deployment.deploy).",
    )  # fmt: skip
    runtime = forms.ChoiceField(choices=[(r, r) for r in RUNTIMES], initial="transformers")
    replicas = forms.IntegerField(min_value=1, max_value=16, initial=1)
    gpu_count = forms.IntegerField(min_value=0, initial=0, label="GPUs", help_text="0 serves on the CPU.")
    max_tokens = forms.IntegerField(min_value=1, initial=64, label="Max tokens", help_text="Per answer.")
    guard_mode = forms.ChoiceField(
        choices=[(m, m) for m in GUARD_MODES], initial="redact", label="Guard mode",
        help_text="What the runtime guard does with personal data in prompts and answers.",
    )  # fmt: skip
    guard_entities = forms.MultipleChoiceField(
        choices=[(e, e) for e in GUARD_ENTITIES], initial=list(GUARD_ENTITIES), required=False,
        widget=forms.CheckboxSelectMultiple, label="Guarded entity types",
    )  # fmt: skip
    # Worded as exceptions, so that a form without them (an unticked box is absent) asks for marking.
    transparency_unmarked = forms.BooleanField(
        required=False, label="Serve unmarked output",
        help_text="Completions carry no ai_generated metadata and no header (EU AI Act Art. 50): staging only.",
    )  # fmt: skip
    transparency_no_header = forms.BooleanField(
        required=False, label="Without the AI-Generated headers", help_text="Marked in the response metadata only."
    )
    transparency_disclosure = forms.CharField(
        required=False, max_length=DISCLOSURE_MAX_CHARS, initial=DEFAULT_DISCLOSURE, label="Disclosure",
        help_text="The statement for people the metadata carries (one line; blank: the default).",
    )  # fmt: skip
    keep_transcripts = forms.BooleanField(
        required=False, label="Keep transcripts",
        help_text="The server keeps each answered prompt and completion, as the guard left them, so that its "
        "rated answers can be exported as a preference dataset (on approval). They may hold personal data the "
        "guard did not catch.",
    )  # fmt: skip
    comment = comment_field()

    def __init__(self, *args: Any, projects: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = ModelVersion.objects.filter(model__project__in=projects).select_related("model__project")
        self.fields["model_version"] = forms.ModelChoiceField(
            versions.order_by("model__project__slug", "model__slug", "-number"), label="Model version",
            help_text="The weights to serve; the deployment belongs to its project.",
        )  # fmt: skip
        self.fields["prompt_template"] = forms.ModelChoiceField(
            PromptTemplate.objects.filter(project__in=projects).select_related("project").order_by("project__slug"),
            required=False, label="Prompt template", empty_label="none",
        )  # fmt: skip
        self.fields["gpu_type"] = gpu_type_field()
        self.fields["ai_system"] = forms.ModelChoiceField(
            AISystem.objects.filter(project__in=projects).select_related("project").order_by("project__slug", "slug"),
            required=False, label="AI system", empty_label="none",
            help_text="The registered AI system this deployment is part of (approved classification, not "
            "prohibited); a high-risk system's production deployment asks for more approvals.",
        )  # fmt: skip
        self.order_fields(
            [
                "name",
                "model_version",
                "environment",
                "runtime",
                "prompt_template",
                "ai_system",
                "replicas",
                "gpu_count",
                "gpu_type",
                "max_tokens",
                "guard_mode",
                "guard_entities",
                "transparency_unmarked",
                "transparency_no_header",
                "transparency_disclosure",
                "keep_transcripts",
                "comment",
            ]
        )


class ClientCredentialForm(forms.Form):
    """What ``deployment_client_credential_issue`` takes; the service checks the values again."""

    name = forms.CharField(
        max_length=100, help_text="Who calls with it (an application, a team). Recorded in the ledger as written.",
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "e.g. support-portal"}),
    )  # fmt: skip
    expires_in_days = forms.IntegerField(
        label="Expires in (days)", min_value=1, initial=90,
        help_text="Every credential expires (at most SERVING_CLIENT_CREDENTIAL_MAX_DAYS days).",
    )  # fmt: skip


class FeedbackExportForm(forms.Form):
    """What ``deployment_feedback_export_request`` takes: a dataset of the deployment's project
    (the service checks it again) and a comment for the approvers."""

    comment = comment_field()

    def __init__(self, *args: Any, deployment: Deployment, **kwargs: Any) -> None:
        from registry.models import Dataset

        super().__init__(*args, **kwargs)
        self.fields["dataset"] = forms.ModelChoiceField(
            Dataset.objects.filter(project=deployment.project).select_related("project").order_by("slug"),
            label="Dataset",
            help_text="Gets the preference pairs as a new version (scanned and reviewed like any upload).",
        )  # fmt: skip
        self.order_fields(["dataset", "comment"])


@admin.register(Deployment)
class DeploymentAdmin(RequestAddMixin, ProjectScopedAdmin):
    list_display = [
        "id", "name", "environment", "project", "model_version", "ai_system", "state", "url", "started_at",
    ]  # fmt: skip
    # Only the projects of deployments this admin may see (a plain filter lists every project).
    list_filter = ["state", "environment", PROJECT_FILTER, "created_at"]
    list_select_related = ["project", "model_version__model", "ai_system__project"]
    # Where it runs and its guard in words rather than the admin's JSON.
    exclude = ["target", "guard", "transparency", "ai_system"]
    readonly_fields = [
        "ai_system_shown", "target_shown", "guard_shown", "transparency_shown", "grant_list", "client_credentials",
        "feedback_export", "log_summary", "monitoring_charts",
    ]  # fmt: skip

    @admin.display(description="AI system")
    def ai_system_shown(self, deployment: Deployment) -> str:
        system = deployment.ai_system
        if system is None:
            return "none: not part of a registered AI system"
        page = reverse("admin:systems_aisystem_change", args=[system.pk])
        return format_html('<a href="{}">{}</a> ({}), {}', page, system.name, system, system.get_risk_class_display())

    @admin.display(description="target")
    def target_shown(self, deployment: Deployment) -> str:
        target = deployment.target or {}
        return ", ".join(f"{k.replace('_', ' ')} {v if v not in ('', None) else '-'}" for k, v in target.items()) or "-"

    @admin.display(description="runtime guard")
    def guard_shown(self, deployment: Deployment) -> str:
        guard = deployment.guard or {}
        entities = ", ".join(guard.get("entities") or []) or "no entity type"
        return f"{guard.get('mode', 'off')} on {entities}"

    @admin.display(description="marking of AI-generated output")
    def transparency_shown(self, deployment: Deployment) -> str:
        marking = transparency_effective(deployment.transparency)
        if not marking["mark"]:
            return "not marked (staging only: completions carry no ai_generated metadata and no header)"
        header = "and the AI-Generated headers" if marking["header"] else "without the headers"
        return f"marked: ai_generated metadata {header}; disclosure: {marking['disclosure']}"

    actions = ["retire", "pause", "resume"]
    action_form = DecisionActionForm  # the reason, next to the action, goes into the ledger

    request_form = DeploymentRequestForm
    request_what, request_title, request_submit = "Deployment", "Request a deployment", "Request the deployment"
    request_intro = (
        "The deployment starts once the approvals and evidence its policy asks for are given (deployment.deploy: "
        "for staging a platform admin and a recent security scan; for production a compliance officer too, a bias "
        "evaluation and approved training data), to exactly what you ask here."
    )
    request_field_aliases = {
        "guard.mode": "guard_mode", "guard.entities": "guard_entities", "transparency.mark": "transparency_unmarked",
        "transparency.header": "transparency_no_header", "transparency.disclosure": "transparency_disclosure",
    }  # fmt: skip

    def submit_request(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, Any]:
        """The deployment and its approval request, through ``deployment_request_submit``."""
        from serving.services import deployment_request_submit

        return deployment_request_submit(
            actor=request.user, comment=data["comment"], model_version=data["model_version"], name=data["name"],
            environment=data["environment"], runtime=data["runtime"],
            target={key: data[key] for key in ("replicas", "gpu_count", "gpu_type", "max_tokens")},
            guard={"mode": data["guard_mode"], "entities": data["guard_entities"]},
            transparency={"mark": not data["transparency_unmarked"],
                          "header": not (data["transparency_unmarked"] or data["transparency_no_header"]),
                          "disclosure": data["transparency_disclosure"] or DEFAULT_DISCLOSURE},
            prompt_template=data["prompt_template"], ai_system=data.get("ai_system"),
            keep_transcripts=data["keep_transcripts"],
        )  # fmt: skip

    @admin.display(description="grants")
    def grant_list(self, deployment: Deployment) -> str:
        rows = [
            (g.grant_id, f"{g.issued_at:%Y-%m-%d %H:%M}", f"{g.expires_at:%Y-%m-%d %H:%M}", g.ledger_index)
            for g in deployment.grants.all()
        ]
        template = "{} issued {}, expires {} (ledger entry {})"
        return format_html_join(mark_safe("<br>"), template, rows) or "-"

    @admin.display(description="client credentials (of this name and environment)")
    def client_credentials(self, deployment: Deployment) -> str:
        from serving.selectors import client_credentials_of_scope

        rows = [(c.name, c.prefix, c.state, f"{c.expires_at:%Y-%m-%d %H:%M}")
                for c in client_credentials_of_scope(deployment)]  # fmt: skip
        listed = format_html_join(mark_safe("<br>"), "{} ({}…), {}, expires {} UTC", rows) or "none"
        url = reverse("admin:serving_deployment_client_credentials", args=[deployment.pk])
        return format_html('{}<br><a href="{}" id="client-credentials-link">Issue or revoke…</a>', listed, url)

    @admin.display(description="feedback as training data")
    def feedback_export(self, deployment: Deployment) -> str:
        url = reverse("admin:serving_deployment_export_feedback", args=[deployment.pk])
        kept = "keeps transcripts" if deployment.keep_transcripts else "keeps no transcripts: nothing to export"
        link = '<a href="{}" id="export-feedback-link">Export feedback as a preference dataset…</a> ({})'
        return format_html(link, url, kept)

    def get_urls(self) -> list[Any]:
        page = path(
            "<path:object_id>/client-credentials/", self.admin_site.admin_view(self.client_credentials_view),
            name="serving_deployment_client_credentials",
        )  # fmt: skip
        export = path(
            "<path:object_id>/export-feedback/", self.admin_site.admin_view(self.export_feedback_view),
            name="serving_deployment_export_feedback",
        )  # fmt: skip
        return [page, export, *super().get_urls()]

    def export_feedback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Ask to export the deployment's feedback as a preference dataset version (its ML
        engineers and data stewards): the approval request of ``deployment.export_feedback``,
        through the service the API calls; a refusal shows on the form, nothing made."""
        from governance.admin.request_forms import TEMPLATE, show_refusal
        from governance.permissions import is_platform_admin, project_roles_held
        from serving.services.preference import EXPORTERS, deployment_feedback_export_request

        deployment = self.get_object(request, object_id)
        if deployment is None:
            raise Http404("no such deployment among your projects'")
        if not (is_platform_admin(request.user) or project_roles_held(request.user, deployment.project) & EXPORTERS):
            raise DjangoPermissionDenied
        form = FeedbackExportForm(request.POST or None, deployment=deployment)
        if request.method == "POST" and form.is_valid():
            try:
                approval = deployment_feedback_export_request(
                    actor=request.user, deployment=deployment, dataset=form.cleaned_data["dataset"],
                    comment=form.cleaned_data["comment"],
                )  # fmt: skip
            except DomainError as exc:
                show_refusal(request, form, exc, {})
            else:
                slots = " and ".join(f"{s['count']} {s['role'].replace('_', ' ')}" for s in approval.rule["approvals"])
                said = f"Feedback export requested: approval request #{approval.pk} waits for {slots}."
                messages.success(request, said)
                return HttpResponseRedirect(reverse("admin:serving_deployment_change", args=[deployment.pk]))
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "form": form,
            "title": f"Export the feedback on {deployment.name} ({deployment.environment}) as a preference dataset",
            "intro": "The prompts and answers the servers of this deployment's name kept, with the ratings and "
            "corrections given, become pairs (prompt, chosen, rejected) in a new version of the dataset once a data "
            "steward approves (and a compliance officer, for production); the version is then scanned and reviewed "
            "like any upload.",
            "submit": "Request the export",
        }  # fmt: skip
        return TemplateResponse(request, TEMPLATE, context)

    def client_credentials_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The credentials of the deployment's name and environment: issue one (shown once, on
        the answer to that POST alone) or revoke one, for the project's platform admins."""
        from serving.selectors import client_credentials_of_scope
        from serving.services import (
            client_credential_may_manage,
            deployment_client_credential_issue,
            deployment_client_credential_revoke,
        )

        deployment = self.get_object(request, object_id)
        if deployment is None:
            raise Http404("no such deployment among your projects'")
        if not client_credential_may_manage(request.user, deployment):
            raise DjangoPermissionDenied
        form = ClientCredentialForm(request.POST if request.POST.get("do") == "issue" else None)
        issued: tuple[Any, str] | None = None
        if request.method == "POST" and request.POST.get("do") == "revoke":
            credential = client_credentials_of_scope(deployment).filter(pk=request.POST.get("credential") or 0).first()
            if credential is None:
                raise Http404("no such credential of this deployment")
            try:
                done = deployment_client_credential_revoke(actor=request.user, credential=credential)
            except DomainError as exc:
                refusal(request, exc, client_credential=credential.prefix)
                messages.error(request, f"{credential.prefix}: {exc.message}")
            else:
                said = "revoked: servers stop accepting it" if done else "was already revoked"
                messages.success(request, f"Credential {credential.name!r} ({credential.prefix}…) {said}.")
            return HttpResponseRedirect(request.path)
        if request.method == "POST" and form.is_valid():
            try:
                issued = deployment_client_credential_issue(
                    actor=request.user, deployment=deployment, name=form.cleaned_data["name"],
                    expires_in_days=form.cleaned_data["expires_in_days"],
                )  # fmt: skip
            except DomainError as exc:
                refusal(request, exc, deployment=deployment.pk)
                for field, problems in exc.fields.items():
                    form.add_error(field if field in form.fields else None, problems)
                if not exc.fields:
                    form.add_error(None, exc.message)
            else:
                form = ClientCredentialForm()
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "deployment": deployment,
            "title": f"Client credentials of {deployment.name} ({deployment.environment})", "form": form,
            "issued": issued, "credentials": client_credentials_of_scope(deployment).select_related("created_by"),
        }  # fmt: skip
        # Answered here, never stored or redirected to: the credential exists in this page alone.
        return TemplateResponse(request, "admin/serving/deployment/client_credentials.html", context)

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

        call_service_for_each(
            request, queryset,
            lambda d: deployment_retire(actor=request.user, deployment=d, reason=_reason(request, "retired")),
            name=lambda d: f"deployment {d.pk}", refusal_fields=lambda d: {"deployment": d.pk}, each={DONE: "retired"},
        )  # fmt: skip

    @admin.action(description="Pause the selected deployments (stop serving)")
    def pause(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        from serving.services import deployment_pause

        call_service_for_each(
            request, queryset,
            lambda d: deployment_pause(actor=request.user, deployment=d, reason=_reason(request, "paused")),
            name=lambda d: f"deployment {d.pk}", refusal_fields=lambda d: {"deployment": d.pk}, each={DONE: "paused"},
        )  # fmt: skip

    @admin.action(description="Resume the selected paused deployments (their alerts resolved)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        from serving.services import deployment_resume

        call_service_for_each(
            request, queryset,
            lambda d: deployment_resume(actor=request.user, deployment=d, reason=_reason(request, "resumed")),
            name=lambda d: f"deployment {d.pk}", refusal_fields=lambda d: {"deployment": d.pk},
            each={DONE: "starting again on its grant"},
        )  # fmt: skip


def _reason(request: HttpRequest, done: str) -> str:
    """The reason typed next to a list's action, or a note naming who did it in the admin."""
    return request.POST.get("reason", "").strip() or f"{done} in the admin by {request.user.get_username()}"


@admin.register(DeploymentAlert)
class DeploymentAlertAdmin(ProjectScopedAdmin):
    """Reviews opened by monitoring thresholds (``policies/deployment.monitor.yaml``). Acknowledging
    and resolving call the same services as the API, with the reason typed next to the action;
    resolving needs one (what was found and done)."""

    project_path = "deployment__project"
    list_display = ["id", "deployment", "metric", "observed", "threshold", "window_start", "state", "paused"]
    list_filter = ["state", "metric", "paused", "opened_at"]
    list_select_related = ["deployment__project"]
    actions = ["acknowledge", "resolve"]
    action_form = DecisionActionForm

    @admin.action(description="Acknowledge the selected alerts (someone looks into them)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[DeploymentAlert]) -> None:
        from serving.services import deployment_alert_acknowledge

        reason = _reason(request, "acknowledged")
        call_service_for_each(
            request, queryset, lambda a: deployment_alert_acknowledge(actor=request.user, alert=a, reason=reason),
            name=lambda a: f"alert {a.pk}", refusal_fields=lambda a: {"alert": a.pk}, each={DONE: "acknowledged"},
        )  # fmt: skip

    @admin.action(description="Resolve the selected alerts (write what was found and done as the reason)")
    def resolve(self, request: HttpRequest, queryset: QuerySet[DeploymentAlert]) -> None:
        from serving.services import deployment_alert_resolve

        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(
                request, "Nothing resolved: resolving an alert needs what was found and done, written in the Reason "
                "field next to the action.", messages.ERROR,
            )  # fmt: skip
            return
        call_service_for_each(
            request, queryset, lambda a: deployment_alert_resolve(actor=request.user, alert=a, reason=reason),
            name=lambda a: f"alert {a.pk}", refusal_fields=lambda a: {"alert": a.pk},
            each={DONE: "resolved (a paused deployment is resumed from the deployments list)"},
        )  # fmt: skip
