from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import id_field, ledgered_text
from serving.rules import transparency_effective


class DeploymentCreateSerializer(serializers.Serializer):
    model_version = id_field()
    name = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=16)
    target = serializers.DictField(required=False, default=dict)
    guard = serializers.DictField(required=False, default=lambda: {"mode": "redact"})
    runtime = serializers.ChoiceField(choices=["transformers", "onnx"], required=False, default="transformers")
    keep_transcripts = serializers.BooleanField(
        required=False, default=False,
        help_text="keep each answered prompt and completion, as the guard left them, for a preference dataset",
    )  # fmt: skip
    transparency = serializers.DictField(
        required=False, default=dict,
        help_text="marking of AI-generated output (EU AI Act Art. 50): mark (default true; false only in "
        "staging), header (default as mark), disclosure (one line, at most 300 characters)",
    )  # fmt: skip
    ai_system = serializers.CharField(
        required=False, max_length=100,
        help_text="the registered AI system this deployment is part of (its id or slug, in the same project), with "
        "an approved risk classification that is not prohibited; its class decides the policy rule",
    )  # fmt: skip


class FeedbackExportInputSerializer(serializers.Serializer):
    dataset = id_field(help_text="the dataset (of the same project) that gets the preference pairs as a version")
    comment = ledgered_text(required=False, allow_blank=True, default="", max_length=4000)


class GrantSerializer(serializers.Serializer):
    grant_id = serializers.UUIDField()
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    ledger_index = serializers.IntegerField()
    text = serializers.CharField()


class LogSegmentSerializer(serializers.Serializer):
    start_offset = serializers.IntegerField()
    end_offset = serializers.IntegerField()
    requests = serializers.IntegerField()
    summary = serializers.JSONField()
    sha256 = serializers.CharField()
    ledger_index = serializers.IntegerField()


class DeploymentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    name = serializers.CharField()
    model_version = serializers.IntegerField(source="model_version_id")
    weights_digest = serializers.CharField(source="model_version.weights_digest")
    environment = serializers.CharField()
    runtime = serializers.CharField()
    keep_transcripts = serializers.BooleanField()
    target = serializers.JSONField()
    guard = serializers.JSONField()
    transparency = serializers.SerializerMethodField(
        help_text="how the server marks completions as AI-generated: mark, header, disclosure"
    )
    state = serializers.CharField()
    previous = serializers.IntegerField(source="previous_id", allow_null=True)
    url = serializers.CharField()
    device = serializers.CharField()
    cpu_fallback = serializers.BooleanField()
    refusal_reason = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    stopped_at = serializers.DateTimeField(allow_null=True)

    def get_transparency(self, deployment: Any) -> dict[str, Any]:
        return transparency_effective(deployment.transparency)


class DeploymentDetailSerializer(DeploymentSerializer):
    grants = GrantSerializer(many=True, source="grants.all")
    log_segments = LogSegmentSerializer(many=True, source="log_segments.all")


class FeedbackInputSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=64, help_text="the request id the server returned (X-Request-Id)")
    rating = serializers.IntegerField(min_value=1, max_value=5, help_text="1 (bad) to 5 (good)")
    category = serializers.CharField(
        max_length=16, help_text="helpful, incorrect, harmful, personal_data, unhelpful or other"
    )
    correction = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=4000,
        help_text="a better answer (at most 4000 characters); kept for a preference dataset, never in the ledger",
    )  # fmt: skip


class FeedbackSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    deployment = serializers.IntegerField(source="deployment_id")
    request_id = serializers.UUIDField()
    rating = serializers.IntegerField()
    category = serializers.CharField()
    has_correction = serializers.SerializerMethodField()
    given_by = serializers.CharField(source="given_by.username")
    created_at = serializers.DateTimeField()
    ledger_index = serializers.IntegerField()

    def get_has_correction(self, feedback: Any) -> bool:
        return bool(feedback.correction)


class MonitoringQuerySerializer(serializers.Serializer):
    window_s = serializers.IntegerField(
        required=False, default=3600, min_value=60, max_value=7 * 86400, help_text="window length in seconds"
    )


class MonitoringSerializer(serializers.Serializer):
    window_s = serializers.IntegerField(allow_null=True)
    prompt_chars_bins = serializers.ListField(child=serializers.CharField())
    drift_thresholds = serializers.JSONField()
    baseline_start = serializers.CharField(allow_null=True)
    windows = serializers.JSONField(
        help_text="per window: requests, error rates, latency percentiles, "
        "prompt length histogram, guard hits, feedback, drift against the first window"
    )
    feedback_by_category = serializers.JSONField()
    unreadable_lines = serializers.IntegerField(
        help_text="inference log lines left out because they could not be read (torn or corrupted)"
    )


class ManifestSerializer(serializers.Serializer):
    platform = serializers.CharField()
    grant_id = serializers.UUIDField(source="grant.grant_id")
    sha256 = serializers.CharField()
    ledger_index = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    text = serializers.CharField(help_text="multi-document YAML, ready for kubectl apply")


class ClientCredentialSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    deployment = serializers.IntegerField(source="deployment_id")
    name = serializers.CharField()
    prefix = serializers.CharField()
    state = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoked_by = serializers.CharField(source="revoked_by.username", allow_null=True, default=None)


class ClientCredentialIssueSerializer(serializers.Serializer):
    name = ledgered_text(max_length=100)
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=36500, help_text="1 to SERVING_CLIENT_CREDENTIAL_MAX_DAYS days"
    )


class ClientCredentialIssuedSerializer(ClientCredentialSerializer):
    credential = serializers.CharField(help_text="shown once: send it as Authorization: Bearer <credential>")


class AlertSerializer(serializers.Serializer):
    """A review opened by a monitoring threshold (``policies/deployment.monitor.yaml``)."""

    id = serializers.IntegerField()
    deployment = serializers.IntegerField(source="deployment_id")
    metric = serializers.CharField()
    state = serializers.CharField()
    observed = serializers.FloatField()
    threshold = serializers.FloatField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    requests = serializers.IntegerField()
    windows = serializers.ListField(child=serializers.CharField())
    policy_hash = serializers.CharField()
    rule = serializers.JSONField()
    paused = serializers.BooleanField()
    opened_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", allow_null=True, default=None)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField(source="resolved_by.username", allow_null=True, default=None)
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolution = serializers.CharField()
    ledger_index = serializers.IntegerField()
