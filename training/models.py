"""Fine-tune runs and per-project GPU quotas.

A run is a governed subject (``fine_tune_run``): its digest covers the base model's weights, the
digests of its dataset versions and prompt template, its hyperparameters and its resource
request, so an approval given to one run does not carry over to a changed one. Rows change only
through ``training.services``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from governance.models import Project
from registry.models import DatasetVersion, ModelVersion, PromptTemplate


class GpuQuota(models.Model):
    """How many GPU-hours a project may request in all (estimates of open runs plus hours used)."""

    project = models.OneToOneField(Project, on_delete=models.PROTECT, related_name="gpu_quota")
    gpu_hours = models.DecimalField(max_digits=10, decimal_places=2)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "GPU quota"

    def __str__(self) -> str:
        return f"{self.project.slug}: {self.gpu_hours} GPU-hours"


class RunState(models.TextChoices):
    REQUESTED = "requested", "requested (waiting for approval)"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


TERMINAL_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class FineTuneRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="fine_tune_runs")
    name = models.CharField(max_length=200)
    base = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="fine_tune_runs")
    dataset_versions = models.ManyToManyField(DatasetVersion, related_name="fine_tune_runs")
    prompt_template = models.ForeignKey(
        PromptTemplate, on_delete=models.PROTECT, null=True, blank=True, related_name="fine_tune_runs"
    )
    text_field = models.CharField(max_length=200, default="text", help_text="the record field that is trained on")
    hyperparameters = models.JSONField()
    gpu_type = models.CharField(max_length=50, blank=True, help_text="empty: CPU only")
    gpu_count = models.PositiveSmallIntegerField(default=0)
    gpu_hours_estimate = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.REQUESTED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # Execution: one delivery claims the run by this key; the others find it taken.
    idempotency_key = models.UUIDField(null=True, blank=True, unique=True, default=None)
    queue = models.CharField(max_length=50, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    device = models.CharField(max_length=50, blank=True, help_text="where it trained")
    cpu_fallback = models.BooleanField(default=False)
    progress = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    failure_reason = models.TextField(blank=True)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    gpu_hours_used = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    code_version = models.CharField(max_length=200, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    output = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="produced_by_runs"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="training_run_state_heartbeat")]
        verbose_name = "fine-tune run"

    def __str__(self) -> str:
        return f"run {self.pk} ({self.name}) in {self.project.slug}"

    @staticmethod
    def new_idempotency_key() -> uuid.UUID:
        return uuid.uuid4()


class OptimisationMethod(models.TextChoices):
    ONNX_DYNAMIC_INT8 = "onnx_dynamic_int8", "ONNX Runtime dynamic int8 quantisation"


class OptimisationRun(models.Model):
    """A governed optimisation of an approved model version (``optimisation_run``): the source
    weights are exported to ONNX and quantised on a worker, the quality lost is measured on an
    evaluation set approved for evaluation, and the result is registered as a new version of the
    same model. Rows change only through ``training.services``."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="optimisation_runs")
    source = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="optimisation_runs")
    method = models.CharField(
        max_length=32, choices=OptimisationMethod.choices, default=OptimisationMethod.ONNX_DYNAMIC_INT8
    )
    evaluation_set = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="optimisation_runs")
    text_field = models.CharField(max_length=200, default="text", help_text="the record field that is measured on")
    max_length = models.PositiveIntegerField(default=128, help_text="tokens per evaluation record, at most")
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.REQUESTED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # Execution: one delivery claims the run by this key; the others find it taken.
    idempotency_key = models.UUIDField(null=True, blank=True, unique=True, default=None)
    attempt = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    failure_reason = models.TextField(blank=True)
    output = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="produced_by_optimisations"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "optimisation run"

    def __str__(self) -> str:
        return f"optimisation {self.pk} of {self.source} in {self.project.slug}"

    @staticmethod
    def new_idempotency_key() -> uuid.UUID:
        return uuid.uuid4()
