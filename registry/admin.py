"""Read-only admin pages of the registry: changes go through the services (API), which check
roles and write the ledger."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from common.admin import PROJECT_FILTER
from governance.admin import ProjectScopedAdmin
from registry.models import Dataset, DatasetVersion, Model, ModelVersion, PiiScan, PromptTemplate
from registry.services import use_status


@admin.register(Dataset)
class DatasetAdmin(ProjectScopedAdmin):
    project_path = "project"
    list_display = ["slug", "project", "name", "lawful_basis", "retention_days", "data_steward", "created_at"]
    list_filter = ["lawful_basis", PROJECT_FILTER]
    list_select_related = ["project", "data_steward"]
    search_fields = ["slug", "name", "purpose"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ProjectScopedAdmin):
    project_path = "dataset__project"
    list_display = [
        "__str__",
        "format",
        "record_count",
        "duplicate_count",
        "pii_verdict",
        "review",
        "usable",
        "created_at",
    ]
    list_filter = ["pii_verdict", "review", "format"]
    list_select_related = ["dataset__project"]

    @admin.display(description="usable")
    def usable(self, obj: DatasetVersion) -> str:
        allowed, reason = use_status(obj)
        return f"{'yes' if allowed else 'no'}: {reason}"


@admin.register(PiiScan)
class PiiScanAdmin(ProjectScopedAdmin):
    project_path = "version__dataset__project"
    list_display = ["id", "version", "status", "requested_at", "finished_at", "records_scanned"]
    list_filter = ["status"]
    list_select_related = ["version__dataset__project"]
    readonly_fields = ["findings_pretty"]

    @admin.display(description="findings (types, counts, locations)")
    def findings_pretty(self, obj: PiiScan) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.findings, indent=2))


@admin.register(Model)
class ModelAdmin(ProjectScopedAdmin):
    project_path = "project"
    list_display = ["slug", "project", "name", "owner", "created_at"]
    list_select_related = ["project", "owner"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    project_path = "model__project"
    list_display = [
        "__str__",
        "weights_digest",
        "size_bytes",
        "base",
        "mlflow_model_name",
        "mlflow_version",
        "created_at",
    ]
    list_select_related = ["model__project", "base__model__project"]
    exclude = ["dataset_versions"]
    readonly_fields = ["trained_on"]

    @admin.display(description="dataset versions")
    def trained_on(self, obj: ModelVersion) -> str:
        return ", ".join(str(dv) for dv in obj.dataset_versions.select_related("dataset__project")) or "-"


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ProjectScopedAdmin):
    project_path = "project"
    list_display = ["__str__", "kind", "content_digest", "intended_use", "owner", "created_at"]
    list_select_related = ["project", "owner"]
