from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audits.checks.special_category import LEGAL_BASES, SAFEGUARDS, SPECIAL_CATEGORIES
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
    special_category = serializers.ChoiceField(
        choices=list(SPECIAL_CATEGORIES), required=False, allow_blank=True, default="",
        help_text="The GDPR Art. 9 category of the sensitive feature, if it is special-category data (a profile "
        "may mark a feature so itself); then legal_basis and safeguards_confirmed are required.",
    )  # fmt: skip
    legal_basis = serializers.ChoiceField(
        choices=list(LEGAL_BASES.items()), required=False, allow_blank=True, default="",
        help_text="The legal basis for processing special-category data for bias detection: EU AI Act Art. 10(5), "
        "or Art. 10(5) as amended (Digital Omnibus, 2026) where the organisation relies on it.",
    )  # fmt: skip
    safeguards_confirmed = serializers.ListField(
        child=serializers.ChoiceField(choices=list(SAFEGUARDS)), required=False, default=list,
        help_text="The safeguards of Art. 10(5), points a to f, the requester confirms are in place (all six).",
    )  # fmt: skip


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
    special_category = serializers.CharField()
    legal_basis = serializers.CharField()
    safeguards_confirmed = serializers.ListField(child=serializers.CharField())
    label_mapping = serializers.JSONField()
    results = serializers.JSONField()
    chart_digest = serializers.CharField()


class ScanDetailSerializer(ScanSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")


class EvaluationDetailSerializer(EvaluationSerializer):
    approvals = ApprovalRequestSerializer(many=True, source="approvals_loaded")
