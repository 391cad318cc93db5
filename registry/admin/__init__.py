"""Admin pages of the registry. Datasets and their versions are worked on here (registration,
upload, the PII scan's findings and their review: ``datasets`` and ``versions``), always through
the registry's services; models, model versions and prompt templates are shown read-only."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from common.admin import readable_field
from governance.admin import ProjectScopedAdmin
from registry.admin import datasets, versions
from registry.models import Model, ModelVersion, PromptTemplate

__all__ = ["datasets", "versions"]


def _digest(value: str) -> str:
    """A digest cut to its first 12 hex digits, whole on hover: lists stay within the page."""
    short = value.removeprefix("sha256:")[:12]
    return format_html('<code title="{}">{}…</code>', value, short) if value else "-"


@admin.register(Model)
class ModelAdmin(ProjectScopedAdmin):
    project_path = "project"
    list_display = ["slug", "project", "name", "owner", "created_at"]
    list_select_related = ["project", "owner"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ProjectScopedAdmin):
    project_path = "model__project"
    list_display = ["__str__", "weights", "size_bytes", "base", "mlflow_model_name", "mlflow_version", "created_at"]
    list_select_related = ["model__project", "base__model__project"]
    fields = ["model", "number", "weights_digest", "size_bytes", "source", "base", "trained_on", "files_shown",
              "lineage_shown", "mlflow_run_id", "mlflow_model_name", "mlflow_version", "mlflow_alias", "created_by",
              "created_at"]  # fmt: skip
    readonly_fields = ["trained_on", "files_shown", "lineage_shown"]
    files_shown = readable_field("files", "files (path: SHA-256)")
    lineage_shown = readable_field("lineage")

    @admin.display(description="weights digest", ordering="weights_digest")
    def weights(self, obj: ModelVersion) -> str:
        return _digest(obj.weights_digest)

    @admin.display(description="dataset versions")
    def trained_on(self, obj: ModelVersion) -> str:
        return ", ".join(str(dv) for dv in obj.dataset_versions.select_related("dataset__project")) or "-"


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ProjectScopedAdmin):
    project_path = "project"
    list_display = ["__str__", "kind", "digest", "intended_use", "owner", "created_at"]
    list_select_related = ["project", "owner"]
    fields = ["project", "slug", "version", "kind", "body_shown", "content_digest", "intended_use", "owner",
              "created_at"]  # fmt: skip
    readonly_fields = ["body_shown"]
    body_shown = readable_field("body", "body")

    @admin.display(description="content digest", ordering="content_digest")
    def digest(self, obj: PromptTemplate) -> str:
        return _digest(obj.content_digest)
