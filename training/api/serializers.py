from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import ReasonInputSerializer, id_field
from governance.api.serializers import ApprovalRequestSerializer
from registry.api.serializers import ModelVersionSerializer


class RunCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    base_model_version = id_field()
    dataset_versions = serializers.ListField(child=id_field(), min_length=1, max_length=50)
    prompt_template = id_field(required=False, allow_null=True)
    text_field = serializers.CharField(max_length=200, default="text")
    hyperparameters = serializers.DictField(help_text="learning_rate, batch_size, epochs or max_steps, seed, method")
    gpu_type = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    gpu_count = serializers.IntegerField(min_value=0, max_value=32767, default=0)
    gpu_hours_estimate = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0, default=0)


class RunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    state = serializers.CharField()
    digest = serializers.SerializerMethodField()
    base_model_version = serializers.IntegerField(source="base_id")
    dataset_versions = serializers.SerializerMethodField()
    prompt_template = serializers.IntegerField(source="prompt_template_id", allow_null=True)
    text_field = serializers.CharField()
    hyperparameters = serializers.JSONField()
    gpu_type = serializers.CharField()
    gpu_count = serializers.IntegerField()
    gpu_hours_estimate = serializers.DecimalField(max_digits=10, decimal_places=2)
    gpu_hours_used = serializers.DecimalField(max_digits=10, decimal_places=4)
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    attempt = serializers.IntegerField()
    queue = serializers.CharField()
    claimed_by = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    device = serializers.CharField()
    cpu_fallback = serializers.BooleanField()
    progress = serializers.JSONField()
    metrics = serializers.JSONField()
    failure_reason = serializers.CharField()
    cancelled_by = serializers.CharField(source="cancelled_by.username", allow_null=True, default=None)
    code_version = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    output = ModelVersionSerializer(allow_null=True)

    def get_digest(self, run: Any) -> str:
        from training.rules import fine_tune_run_digest

        return fine_tune_run_digest(run)

    def get_dataset_versions(self, run: Any) -> list[int]:
        return sorted(v.pk for v in run.dataset_versions.all())


class RunDetailSerializer(RunSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")


class GpuQuotaSerializer(serializers.Serializer):
    project = serializers.CharField()
    quota = serializers.DecimalField(max_digits=10, decimal_places=2)
    requested = serializers.DecimalField(max_digits=10, decimal_places=2)
    used = serializers.DecimalField(max_digits=12, decimal_places=4)
    available = serializers.DecimalField(max_digits=12, decimal_places=4)


class GpuQuotaSetSerializer(ReasonInputSerializer):
    gpu_hours = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)
