from __future__ import annotations

from rest_framework import serializers

from audits.reports.models import ReportKind
from common.api import id_field


class ReportRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ReportKind.choices)
    project = serializers.SlugField(
        required=False,
        allow_null=True,
        default=None,
        help_text="the project's slug; omitted: the organisation (platform admins)",
    )
    model_version = id_field(required=False, allow_null=True, default=None, help_text="for annex_iv and dpia")
    ai_system = id_field(required=False, allow_null=True, default=None, help_text="for ai_system_annex_iv")
    period_start = serializers.DateField()
    period_end = serializers.DateField()


class ReportRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    report_id = serializers.UUIDField()
    kind = serializers.CharField()
    project = serializers.CharField(source="project.slug", allow_null=True, default=None)
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
    ai_system = serializers.IntegerField(source="ai_system_id", allow_null=True)
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    state = serializers.CharField()
    progress = serializers.IntegerField()
    step = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    pdf_sha256 = serializers.CharField()
    pdf_size = serializers.IntegerField(allow_null=True)
    checkpoint_size = serializers.IntegerField(allow_null=True)
    ledger_index = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
