from __future__ import annotations

from rest_framework import serializers

from common.api import id_field, ledgered_text


class DeploymentCreateSerializer(serializers.Serializer):
    model_version = id_field()
    name = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=16)
    target = serializers.DictField(required=False, default=dict)
    guard = serializers.DictField(required=False, default=lambda: {"mode": "redact"})
    runtime = serializers.ChoiceField(choices=["transformers", "onnx"], required=False, default="transformers")


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
    target = serializers.JSONField()
    guard = serializers.JSONField()
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


class DeploymentDetailSerializer(DeploymentSerializer):
    grants = GrantSerializer(many=True, source="grants.all")
    log_segments = LogSegmentSerializer(many=True, source="log_segments.all")


class FeedbackInputSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=64, help_text="the request id the server returned (X-Request-Id)")
    rating = serializers.IntegerField(min_value=1, max_value=5, help_text="1 (bad) to 5 (good)")
    category = serializers.CharField(
        max_length=16, help_text="helpful, incorrect, harmful, personal_data, unhelpful or other"
    )


class FeedbackSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    deployment = serializers.IntegerField(source="deployment_id")
    request_id = serializers.UUIDField()
    rating = serializers.IntegerField()
    category = serializers.CharField()
    given_by = serializers.CharField(source="given_by.username")
    created_at = serializers.DateTimeField()
    ledger_index = serializers.IntegerField()


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
