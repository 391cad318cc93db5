"""Admin pages of training: runs (live state, metrics, approvals, output), optimisation runs
(int8 quantisations with their measured figures) and GPU quotas. Rows change only through
services: an ML engineer requests a run on "Request a fine-tune run" or "Request a quantisation"
(the run and its approval request, as the API makes them), and a run is cancelled or started
again through the same service as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from common.admin import DONE, PROJECT_FILTER, call_service_for_each
from governance.admin import ProjectScopedAdmin
from governance.admin.request_forms import RequestAddMixin, comment_field, gpu_type_field
from registry.models import DatasetVersion, ModelVersion
from training.models import FineTuneRun, GpuQuota, OptimisationMethod, OptimisationRun


class RunRequestForm(forms.Form):
    """What ``fine_tune_run_request`` takes, for the projects where the person is an ML engineer;
    the hyperparameters the engine knows, with its defaults."""

    name = forms.CharField(max_length=200, help_text="What the run makes, e.g. support-tone-v2.")
    comment = comment_field()
    text_field = forms.CharField(
        max_length=200, initial="text", help_text="The field of each record that holds the training text."
    )
    method = forms.ChoiceField(choices=[("full", "full fine-tune"), ("lora", "LoRA adapter")], initial="full")
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    learning_rate = forms.FloatField(min_value=0, initial=5e-5, widget=forms.NumberInput(attrs={"step": "any"}))
    batch_size = forms.IntegerField(min_value=1, max_value=4096, initial=4)
    seed = forms.IntegerField(min_value=0, initial=0, help_text="The same seed and data give the same weights.")
    gpu_count = forms.IntegerField(
        min_value=0, initial=0, label="GPUs",
        help_text="0 runs on the CPU; several GPUs need a platform admin's approval too.",
    )  # fmt: skip
    gpu_hours_estimate = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=2, initial=0, label="GPU-hours (estimate)",
        help_text="Counted against the project's GPU quota while the run is open.",
    )  # fmt: skip

    def __init__(self, *args: Any, projects: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bases = ModelVersion.objects.filter(model__project__in=projects).select_related("model__project")
        versions = DatasetVersion.objects.filter(dataset__project__in=projects).select_related("dataset__project")
        self.fields["base"] = forms.ModelChoiceField(
            bases.order_by("model__project__slug", "model__slug", "-number"), label="Base model version",
            help_text="The weights to start from; the run belongs to its project.",
        )  # fmt: skip
        self.fields["dataset_versions"] = forms.ModelMultipleChoiceField(
            versions.order_by("dataset__project__slug", "dataset__slug", "-number"), label="Dataset versions",
            widget=forms.CheckboxSelectMultiple,
            help_text="Only versions approved for training (with their personal data reviewed) may be used.",
        )  # fmt: skip
        self.fields["gpu_type"] = gpu_type_field()
        self.order_fields(
            [
                "name",
                "base",
                "dataset_versions",
                "text_field",
                "method",
                "epochs",
                "learning_rate",
                "batch_size",
                "seed",
                "gpu_count",
                "gpu_type",
                "gpu_hours_estimate",
                "comment",
            ]
        )


class QueueFilter(admin.SimpleListFilter):
    """The queues runs went to; a run not queued yet has none, and the admin's own filter would
    offer that as a link without a name."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = model_admin.get_queryset(request).exclude(queue="").values_list("queue", flat=True).distinct()
        return [("-", "not queued"), *((queue, queue) for queue in sorted(queues))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[FineTuneRun]) -> QuerySet[FineTuneRun]:
        value = self.value()
        return queryset if value is None else queryset.filter(queue="" if value == "-" else value)


@admin.register(FineTuneRun)
class FineTuneRunAdmin(RequestAddMixin, ProjectScopedAdmin):
    list_display = ["id", "name", "project", "state", "progress_summary", "gpu_count", "gpu_type", "requested_by",
                    "created_at", "output"]  # fmt: skip
    list_filter = ["state", PROJECT_FILTER, QueueFilter, "cpu_fallback", "created_at"]
    list_select_related = ["project", "requested_by", "output__model"]
    search_fields = ["name", "failure_reason"]
    # The hyperparameters in words rather than the admin's JSON.
    exclude = ["hyperparameters"]
    readonly_fields = ["hyperparameters_shown", "run_digest", "approvals", "usage"]
    actions = ["cancel"]

    request_form = RunRequestForm
    request_what, request_title, request_submit = "Fine-tune run", "Request a fine-tune run", "Request the run"
    request_intro = (
        "The run trains once the approvals its policy asks for are given (fine_tune_run.execute: another ML "
        "engineer, and a platform admin for several GPUs); they approve exactly what you ask here, by its digest."
    )

    def submit_request(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, Any]:
        """The run and its approval request, through ``fine_tune_run_request_submit``."""
        from training.services import fine_tune_run_request_submit

        return fine_tune_run_request_submit(
            actor=request.user, comment=data["comment"], project=data["base"].model.project, name=data["name"],
            base=data["base"], dataset_versions=list(data["dataset_versions"]),
            hyperparameters={key: data[key] for key in ("method", "epochs", "learning_rate", "batch_size", "seed")},
            text_field=data["text_field"], gpu_type=data["gpu_type"], gpu_count=data["gpu_count"],
            gpu_hours_estimate=data["gpu_hours_estimate"],
        )  # fmt: skip

    @admin.display(description="progress")
    def progress_summary(self, run: FineTuneRun) -> str:
        loss = run.progress.get("loss")
        if not isinstance(loss, int | float):
            return "-"
        return f"step {run.progress.get('step')}/{run.progress.get('total_steps')}, loss {loss:.4f}"

    @admin.display(description="hyperparameters")
    def hyperparameters_shown(self, run: FineTuneRun) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {'-' if v is None else v}" for k, v in run.hyperparameters.items())

    @admin.display(description="digest")
    def run_digest(self, run: FineTuneRun) -> str:
        from training.rules import fine_tune_run_digest

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
        # A list, whose links the workbench underlines (a link beside text must not rely on colour).
        items = format_html_join("", '<li><a href="{}">#{}</a> {} ({})</li>', rows)
        return format_html('<ul class="run-approvals" style="margin: 0; padding: 0">{}</ul>', items) if rows else "-"

    @admin.display(description="project GPU-hours")
    def usage(self, run: FineTuneRun) -> str:
        from training.selectors import gpu_usage

        u = gpu_usage(run.project)
        return f"quota {u['quota']}, requested {u['requested']}, used {u['used']}, available {u['available']}"

    @admin.action(description="Cancel the selected runs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[FineTuneRun]) -> None:
        from training.services import fine_tune_run_cancel

        call_service_for_each(
            request, queryset,
            lambda run: fine_tune_run_cancel(actor=request.user, run=run, reason="cancelled in the admin"),
            name=lambda run: f"run {run.pk}", refusal_fields=lambda run: {"fine_tune_run": run.pk},
            each={DONE: "cancelled (a running run stops at its next heartbeat)"},
        )  # fmt: skip


@admin.register(GpuQuota)
class GpuQuotaAdmin(ProjectScopedAdmin):
    list_display = ["project", "gpu_hours", "requested", "used", "available", "updated_by", "updated_at"]
    list_select_related = ["project", "updated_by"]

    def _usage(self, quota: GpuQuota) -> dict[str, Any]:
        from training.selectors import gpu_usage

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


class OptimisationRequestForm(forms.Form):
    """What ``optimisation_run_request`` takes, for the projects where the person is an ML
    engineer; the service checks the values again (the source not an ONNX export, the evaluation
    set of the same project and usable, text in the field)."""

    method = forms.ChoiceField(choices=OptimisationMethod.choices, initial=OptimisationMethod.ONNX_DYNAMIC_INT8)
    text_field = forms.CharField(
        max_length=200, initial="text", help_text="The field of each evaluation record that holds the text."
    )
    max_length = forms.IntegerField(
        min_value=2, max_value=1024, initial=128, label="Max length", help_text="Tokens per evaluation record, at most."
    )
    comment = comment_field()

    def __init__(self, *args: Any, projects: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sources = ModelVersion.objects.filter(model__project__in=projects).select_related("model__project")
        versions = DatasetVersion.objects.filter(dataset__project__in=projects).select_related("dataset__project")
        self.fields["source"] = forms.ModelChoiceField(
            sources.order_by("model__project__slug", "model__slug", "-number"), label="Source model version",
            help_text="The weights to quantise (not an ONNX export); the run belongs to its project.",
        )  # fmt: skip
        self.fields["evaluation_set"] = forms.ModelChoiceField(
            versions.order_by("dataset__project__slug", "dataset__slug", "-number"), label="Evaluation set",
            help_text="A dataset version of the same project, approved for dataset_version.use_for_evaluation "
            "before the run starts: the perplexity of both models is measured on it.",
        )  # fmt: skip
        self.order_fields(["source", "evaluation_set", "method", "text_field", "max_length", "comment"])


def _figure(run: OptimisationRun, *keys: str) -> Any:
    """One measured figure (``metrics["int8"]["perplexity"]``), ``None`` before the run measured it."""
    value: Any = run.metrics
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(value: Any, template: str) -> str:
    return "-" if value is None else template.format(value)


@admin.register(OptimisationRun)
class OptimisationRunAdmin(RequestAddMixin, ProjectScopedAdmin):
    list_display = ["id", "project", "state", "source", "output", "perplexity_fp32", "perplexity_int8",
                    "perplexity_delta", "sizes", "latency", "requested_by", "created_at"]  # fmt: skip
    list_filter = ["state", PROJECT_FILTER, "method", "created_at"]
    list_select_related = ["project", "source__model__project", "output__model__project", "requested_by"]
    search_fields = ["failure_reason"]
    # The figures in words rather than the admin's JSON.
    exclude = ["metrics"]
    readonly_fields = ["figures", "run_digest", "approvals"]
    actions = ["start_again", "cancel"]

    request_form = OptimisationRequestForm
    request_what, request_title, request_submit = (
        "Optimisation run", "Request a quantisation", "Request the quantisation",
    )  # fmt: skip
    request_intro = (
        "The source is exported to ONNX and its weights quantised to int8 (ONNX Runtime dynamic quantisation) once "
        "the approvals its policy asks for are given (optimisation_run.execute: another ML engineer, with the "
        "evaluation set approved for evaluation); the perplexity of both models is measured on the evaluation set "
        "and the int8 model registered as a new version of the same model."
    )

    def submit_request(self, request: HttpRequest, data: dict[str, Any]) -> tuple[Any, Any]:
        """The run and its approval request, through ``optimisation_run_request_submit``."""
        from training.services import optimisation_run_request_submit

        return optimisation_run_request_submit(
            actor=request.user, comment=data["comment"], project=data["source"].model.project,
            source=data["source"], evaluation_set=data["evaluation_set"], method=data["method"],
            text_field=data["text_field"], max_length=data["max_length"],
        )  # fmt: skip

    @admin.display(description="perplexity fp32")
    def perplexity_fp32(self, run: OptimisationRun) -> str:
        return _number(_figure(run, "fp32", "perplexity"), "{:.4f}")

    @admin.display(description="perplexity int8")
    def perplexity_int8(self, run: OptimisationRun) -> str:
        return _number(_figure(run, "int8", "perplexity"), "{:.4f}")

    @admin.display(description="perplexity delta")
    def perplexity_delta(self, run: OptimisationRun) -> str:
        return _number(_figure(run, "perplexity_delta"), "{:+.2%}")

    @admin.display(description="size fp32 → int8")
    def sizes(self, run: OptimisationRun) -> str:
        fp32, int8 = _figure(run, "fp32", "size_bytes"), _figure(run, "int8", "size_bytes")
        if fp32 is None or int8 is None:
            return "-"
        return f"{fp32 / 1e6:.2f} → {int8 / 1e6:.2f} MB"

    @admin.display(description="latency p50 fp32 → int8")
    def latency(self, run: OptimisationRun) -> str:
        fp32, int8 = _figure(run, "fp32", "latency_ms_p50"), _figure(run, "int8", "latency_ms_p50")
        if fp32 is None or int8 is None:
            return "-"
        return f"{fp32:.2f} → {int8:.2f} ms"

    @admin.display(description="measured figures")
    def figures(self, run: OptimisationRun) -> str:
        if _figure(run, "perplexity_delta") is None:
            return "-"
        return (
            f"perplexity {self.perplexity_fp32(run)} (fp32) → {self.perplexity_int8(run)} (int8), "
            f"{self.perplexity_delta(run)}; size {self.sizes(run)}; latency p50 {self.latency(run)} "
            f"(this worker's machine); {_number(_figure(run, 'records'), '{}')} records, "
            f"{_number(_figure(run, 'fp32', 'tokens'), '{}')} tokens"
        )

    @admin.display(description="digest")
    def run_digest(self, run: OptimisationRun) -> str:
        from training.services import optimisation_run_digest

        return optimisation_run_digest(run)

    @admin.display(description="approval requests")
    def approvals(self, run: OptimisationRun) -> str:
        from training.selectors import optimisation_run_approvals

        rows = [
            (reverse("admin:governance_approvalrequest_change", args=[r.pk]), r.pk, r.state,
             f"{r.created_at:%Y-%m-%d %H:%M}")
            for r in optimisation_run_approvals(run)
        ]  # fmt: skip
        items = format_html_join("", '<li><a href="{}">#{}</a> {} ({})</li>', rows)
        return format_html('<ul class="run-approvals" style="margin: 0; padding: 0">{}</ul>', items) if rows else "-"

    @admin.action(description="Start the selected failed runs again (their approval still holding)")
    def start_again(self, request: HttpRequest, queryset: QuerySet[OptimisationRun]) -> None:
        from training.services import optimisation_run_start

        call_service_for_each(
            request, queryset, lambda run: optimisation_run_start(actor=request.user, run=run),
            name=lambda run: f"optimisation run {run.pk}", refusal_fields=lambda run: {"optimisation_run": run.pk},
            each={DONE: lambda run: f"queued (attempt {run.attempt})"},
        )  # fmt: skip

    @admin.action(description="Cancel the selected runs (until a worker starts them)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[OptimisationRun]) -> None:
        from training.services import optimisation_run_cancel

        call_service_for_each(
            request, queryset,
            lambda run: optimisation_run_cancel(actor=request.user, run=run, reason="cancelled in the admin"),
            name=lambda run: f"optimisation run {run.pk}", refusal_fields=lambda run: {"optimisation_run": run.pk},
            each={DONE: "cancelled"},
        )  # fmt: skip
