from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import id_field
from governance.api.serializers import ApprovalRequestSerializer


class ScanRequestSerializer(serializers.Serializer):
    profile = serializers.CharField(max_length=100)


class EvaluationRequestSerializer(serializers.Serializer):
    profile = serializers.CharField(max_length=100)
    dataset_version = id_field()
    prompt_template = id_field()
    label_field = serializers.CharField(max_length=200)
    sensitive_feature = serializers.CharField(max_length=200)
    label_mapping = serializers.DictField(child=serializers.CharField(max_length=100, allow_blank=True))


class _AuditSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    model_version = serializers.IntegerField(source="model_version_id")
    weights_digest = serializers.CharField()
    profile_name = serializers.CharField()
    profile = serializers.JSONField()
    trigger = serializers.CharField()
    state = serializers.CharField()
    verdict = serializers.CharField()
    reasons = serializers.ListField(child=serializers.CharField())
    failure_reason = serializers.CharField()
    report_digest = serializers.CharField()
    digest = serializers.SerializerMethodField()
    regression_of = serializers.IntegerField(source="regression_of_id", allow_null=True)
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_digest(self, audit: Any) -> str:
        from audits.checks.services import audit_digest

        return audit_digest(audit)


class ScanSerializer(_AuditSerializer):
    findings = serializers.JSONField()
    garak_version = serializers.CharField()


class EvaluationSerializer(_AuditSerializer):
    dataset_version = serializers.IntegerField(source="dataset_version_id")
    prompt_template = serializers.IntegerField(source="prompt_template_id")
    label_field = serializers.CharField()
    sensitive_feature = serializers.CharField()
    label_mapping = serializers.JSONField()
    results = serializers.JSONField()
    chart_digest = serializers.CharField()


class ScanDetailSerializer(ScanSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")


class EvaluationDetailSerializer(EvaluationSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")
