"""The datasets: the list, the registration form (data stewards) and each dataset's page with its
versions and the upload of a new one. Registration and upload call ``dataset_create`` and
``dataset_version_upload``, as the API does; the page never saves a row itself."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from common.admin import PROJECT_FILTER, readable_field
from common.errors import DomainError
from common.security_log import refusal
from governance.admin import ProjectScopedAdmin
from governance.roles import Role
from governance.selectors import project_list
from registry.admin.forms import DatasetRegisterForm, UploadForm
from registry.admin.shared import created, refused, roles_in
from registry.models import Dataset
from registry.rules import use_status
from registry.selectors import version_list
from registry.services import WRITERS, dataset_create, dataset_version_upload


def _steward_projects(request: HttpRequest) -> QuerySet[Any]:
    return project_list(user=request.user, roles=[Role.DATA_STEWARD]).order_by("slug")


@admin.register(Dataset)
class DatasetAdmin(ProjectScopedAdmin):
    """Datasets of the user's projects. A data steward registers one ("Add dataset"); a steward or
    ML engineer of its project uploads versions on its page."""

    project_path = "project"
    list_display = ["slug", "project", "name", "lawful_basis", "retention", "data_steward", "versions", "created"]
    list_filter = ["lawful_basis", PROJECT_FILTER]
    list_select_related = ["project", "data_steward"]
    search_fields = ["slug", "name", "purpose"]
    data_subject_categories_shown = readable_field("data_subject_categories")
    personal_data_categories_shown = readable_field("personal_data_categories")
    recipients_shown = readable_field("recipients")
    third_country_transfers_shown = readable_field("third_country_transfers", "third-country transfers")
    fieldsets = [
        (None, {"fields": ["project", "slug", "name", "description", "data_steward", "created_at"]}),
        (
            "Record of processing (GDPR Art. 30)",
            {
                "fields": [
                    "purpose", "lawful_basis", "data_subject_categories_shown", "personal_data_categories_shown",
                    "recipients_shown", "third_country_transfers_shown", "retention_days", "source",
                ]
            },
        ),
    ]  # fmt: skip
    readonly_fields = [
        "data_subject_categories_shown", "personal_data_categories_shown", "recipients_shown",
        "third_country_transfers_shown",
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    created = created

    @admin.display(description="retention", ordering="retention_days")
    def retention(self, obj: Dataset) -> str:
        return f"{obj.retention_days} days"

    @admin.display(description="versions", ordering="version_count")
    def versions(self, obj: Dataset) -> int:
        return obj.version_count  # type: ignore[attr-defined]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Registering needs the data steward role in some project; the service checks the chosen one.
        return _steward_projects(request).exists()

    def get_urls(self) -> list[Any]:
        own = [
            path("<int:pk>/upload/", self.admin_site.admin_view(require_POST(self.upload_view)),
                 name="registry_dataset_upload"),
        ]  # fmt: skip
        return own + super().get_urls()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The registration form: what ``dataset_create`` takes, for a project where the user is a
        data steward. A refusal (a slug already taken, a role lost meanwhile) shows on the form,
        which keeps what was typed."""
        projects = _steward_projects(request)
        if not projects.exists():
            messages.error(request, "Registering a dataset needs the data_steward role in a project.")
            return HttpResponseRedirect(reverse("admin:registry_dataset_changelist"))
        form = DatasetRegisterForm(request.POST or None, projects=projects)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            try:
                dataset = dataset_create(actor=request.user, data_steward=request.user, **data)
            except DomainError as exc:
                refusal(request, exc, project=data["project"].slug)
                for field, problems in (exc.fields or {}).items():
                    if field in form.fields:
                        form.add_error(field, problems)
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Registered {dataset}. Upload its first version below.")
                return HttpResponseRedirect(reverse("admin:registry_dataset_change", args=[dataset.pk]))
        context = {
            **self.admin_site.each_context(request), "form": form, "opts": self.opts, "title": "Register a dataset",
        }  # fmt: skip
        return TemplateResponse(request, "admin/registry/dataset/register.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        dataset = self.get_object(request, object_id)
        if dataset is not None:
            versions = list(version_list(dataset=dataset))
            extra_context = {
                **(extra_context or {}),
                "versions": [(v, *use_status(v)) for v in versions],
                "may_upload": bool(roles_in(request, dataset.project) & WRITERS),
                "upload_form": UploadForm(),
                "max_upload_mb": settings.REGISTRY_MAX_UPLOAD_BYTES / (1024 * 1024),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def upload_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Upload a file as a new version (``dataset_version_upload``): the version's page follows,
        where its PII scan can be watched. A refusal (no file, too large, malformed, a role
        missing) is told on the dataset's page, and nothing is stored."""
        dataset = get_object_or_404(self.get_queryset(request), pk=pk)
        back = reverse("admin:registry_dataset_change", args=[dataset.pk])
        form = UploadForm(request.POST, request.FILES)
        if not form.is_valid():
            problems = "; ".join(str(e) for errors in form.errors.values() for e in errors)
            messages.error(request, f"No version uploaded: {problems}")
            return HttpResponseRedirect(back)
        upload = form.cleaned_data["file"]
        limit = settings.REGISTRY_MAX_UPLOAD_BYTES
        try:
            if upload.size > limit:  # before reading it: the service would refuse it after
                raise DomainError(
                    "file_too_large",
                    f"{upload.name} is {upload.size} bytes; the limit (REGISTRY_MAX_UPLOAD_BYTES) is {limit}",
                    status_code=413,
                )
            version, created = dataset_version_upload(
                actor=request.user, dataset=dataset, filename=upload.name, data=upload.read()
            )
        except DomainError as exc:
            return refused(request, exc, back, dataset=dataset.pk)
        if created:
            messages.success(request, f"Uploaded {upload.name} as {version}; its PII scan is queued.")
        else:
            messages.info(request, f"{upload.name} holds the same bytes as {version}: no new version.")
        return HttpResponseRedirect(reverse("admin:registry_datasetversion_change", args=[version.pk]))
