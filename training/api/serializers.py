from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import ReasonInputSerializer, id_field, ledgered_text
from governance.api.serializers import ApprovalRequestSerializer
from registry.api.serializers import ModelVersionSerializer
from training.models import OptimisationMethod


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


class OptimisationRunCreateSerializer(serializers.Serializer):
    source = id_field(help_text="the model version to quantise: one of the project's, not an ONNX export already")
    evaluation_set = id_field(
        help_text="the dataset version the quality lost is measured on: the project's, with text in text_field, "
        "approved for dataset_version.use_for_evaluation before the run starts",
    )  # fmt: skip
    method = serializers.ChoiceField(choices=OptimisationMethod.choices, default=OptimisationMethod.ONNX_DYNAMIC_INT8)
    text_field = serializers.CharField(max_length=200, default="text")
    max_length = serializers.IntegerField(min_value=2, max_value=1024, default=128, help_text="tokens per record")
    submit = serializers.BooleanField(
        default=False,
        help_text="also open the approval request (optimisation_run.execute) in the same transaction: a refusal of "
        "either leaves neither",
    )  # fmt: skip
    comment = ledgered_text(required=False, allow_blank=True, default="", max_length=4000)


class OptimisationRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    state = serializers.CharField()
    digest = serializers.SerializerMethodField()
    source = serializers.IntegerField(source="source_id")
    source_weights_digest = serializers.CharField(source="source.weights_digest")
    method = serializers.CharField()
    evaluation_set = serializers.IntegerField(source="evaluation_set_id")
    text_field = serializers.CharField()
    max_length = serializers.IntegerField()
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    attempt = serializers.IntegerField()
    claimed_by = serializers.CharField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    metrics = serializers.JSONField(
        help_text="the measured figures once succeeded: fp32 and int8 (perplexity, mean_nll, tokens, "
        "latency_ms_p50, size_bytes), perplexity_delta (int8 / fp32 - 1), size_ratio, records, max_length"
    )
    failure_reason = serializers.CharField()
    output = ModelVersionSerializer(allow_null=True)

    def get_digest(self, run: Any) -> str:
        from training.services import optimisation_run_digest

        return optimisation_run_digest(run)


class OptimisationRunDetailSerializer(OptimisationRunSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")
