"""Read-only admin pages of the registry: changes go through the services (API), which check
roles and write the ledger."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from registry.models import Dataset, DatasetVersion, PiiScan
from registry.services import use_status


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ["slug", "project", "name", "lawful_basis", "retention_days", "data_steward", "created_at"]
    list_filter = ["lawful_basis", "project"]
    list_select_related = ["project", "data_steward"]
    search_fields = ["slug", "name", "purpose"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
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
class PiiScanAdmin(ReadOnlyAdmin):
    list_display = ["id", "version", "status", "requested_at", "finished_at", "records_scanned"]
    list_filter = ["status"]
    list_select_related = ["version__dataset__project"]
    readonly_fields = ["findings_pretty"]

    @admin.display(description="findings (types, counts, locations)")
    def findings_pretty(self, obj: PiiScan) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.findings, indent=2))
