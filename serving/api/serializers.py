from __future__ import annotations

from rest_framework import serializers


class DeploymentCreateSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(min_value=1)
    name = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=16)
    target = serializers.DictField(required=False, default=dict)
    guard = serializers.DictField(required=False, default=lambda: {"mode": "redact"})


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


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
