from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.api import id_field, ledgered_text
from registry.models import Dataset, DatasetVersion, LawfulBasis, PiiScan, Review
from registry.rules import dataset_version_digest, use_status


class DatasetSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    data_steward = serializers.SlugRelatedField(slug_field="username", read_only=True)
    version_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Dataset
        fields = [
            "id", "project", "slug", "name", "description", "purpose", "lawful_basis", "data_subject_categories",
            "personal_data_categories", "recipients", "third_country_transfers", "retention_days", "source",
            "data_steward", "created_at", "version_count",
        ]  # fmt: skip
        read_only_fields = fields


class DatasetCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    purpose = serializers.CharField()
    lawful_basis = serializers.ChoiceField(choices=LawfulBasis.choices)
    retention_days = serializers.IntegerField(min_value=1, max_value=36600, help_text="1 to 36600 (100 years)")
    source = serializers.CharField(max_length=500)
    data_subject_categories = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    personal_data_categories = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    recipients = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    third_country_transfers = serializers.ListField(child=serializers.CharField(), required=False, default=list)


class PiiScanSerializer(serializers.ModelSerializer):
    rate = serializers.FloatField(read_only=True, allow_null=True, help_text="records scanned per second so far")
    eta_s = serializers.FloatField(
        read_only=True, allow_null=True, help_text="seconds left at the rate so far, while it runs"
    )

    class Meta:
        model = PiiScan
        fields = [
            "id",
            "status",
            "requested_at",
            "started_at",
            "finished_at",
            "error",
            "records_scanned",
            "findings",
            "engine",
            "shard_count",
            "records_total",
            "records_done",
            "progress_at",
            "rate",
            "eta_s",
        ]
        read_only_fields = fields


class DatasetVersionSerializer(serializers.ModelSerializer):
    dataset = serializers.PrimaryKeyRelatedField(read_only=True)
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    digest = serializers.SerializerMethodField()
    usable = serializers.SerializerMethodField()
    usable_reason = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "dataset", "number", "sha256", "digest", "size_bytes", "format", "original_name", "record_count",
            "duplicate_count", "pii_verdict", "review", "reviewed_by", "reviewed_at", "review_note", "usable",
            "usable_reason", "parent", "derivation", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_digest(self, obj: DatasetVersion) -> str:
        return dataset_version_digest(obj)

    def get_usable(self, obj: DatasetVersion) -> bool:
        return use_status(obj)[0]

    def get_usable_reason(self, obj: DatasetVersion) -> str:
        return use_status(obj)[1]


class DatasetVersionDetailSerializer(DatasetVersionSerializer):
    latest_scan = serializers.SerializerMethodField()

    class Meta(DatasetVersionSerializer.Meta):
        fields = [*DatasetVersionSerializer.Meta.fields, "latest_scan"]
        read_only_fields = fields

    def get_latest_scan(self, obj: DatasetVersion) -> dict[str, Any] | None:
        scan = obj.scans.order_by("-requested_at").first()
        return PiiScanSerializer(scan).data if scan else None


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class RegisterPathSerializer(serializers.Serializer):
    path = serializers.CharField(max_length=4096)


class ReviewSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=[Review.CONFIRMED, Review.FALSE_POSITIVE, Review.ANONYMISATION_REQUIRED])
    note = ledgered_text(required=False, allow_blank=True, default="")


class SubjectLookupSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["email", "phone", "name"])
    identifier = serializers.CharField(max_length=500)


class ModelSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class ModelVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.IntegerField(source="model_id")
    number = serializers.IntegerField()
    weights_digest = serializers.CharField()
    files = serializers.DictField(child=serializers.CharField())
    size_bytes = serializers.IntegerField()
    base = serializers.IntegerField(source="base_id", allow_null=True)
    mlflow_run_id = serializers.CharField()
    mlflow_model_name = serializers.CharField()
    mlflow_version = serializers.CharField()
    mlflow_alias = serializers.CharField()
    lineage = serializers.JSONField()
    created_at = serializers.DateTimeField()


class ModelVersionRegisterSerializer(serializers.Serializer):
    folder = serializers.CharField(max_length=4096)
    base = id_field(required=False, allow_null=True, default=None)
    dataset_versions = serializers.ListField(child=id_field(), required=False, default=list)


class PromptTemplateSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    slug = serializers.SlugField(max_length=100)
    version = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=["template", "chain"], default="template")
    body = serializers.JSONField()
    content_digest = serializers.CharField(read_only=True)
    intended_use = serializers.CharField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class DatasetLineageSerializer(serializers.Serializer):
    derived_dataset_versions = DatasetVersionSerializer(many=True)
    model_versions = ModelVersionSerializer(many=True)


class ModelLineageSerializer(serializers.Serializer):
    base_model_versions = ModelVersionSerializer(many=True)
    dataset_versions = DatasetVersionSerializer(many=True)
