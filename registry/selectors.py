"""Reads of the registry; each takes the user and returns only what the user may see (a project
the user holds no role in answers 404, exactly like one that does not exist)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from common.errors import NotFound
from governance.models import Project
from governance.selectors import project_list
from registry.models import Dataset, DatasetVersion, PiiScan


def project_get(*, user: Any, slug: str) -> Project:
    project = project_list(user=user).filter(slug=slug).first()
    if project is None:
        raise NotFound("not_found", f"no project {slug!r}")
    return project


def dataset_list(*, user: Any, project: Project) -> QuerySet[Dataset]:
    return (
        Dataset.objects.filter(project__in=project_list(user=user), project=project)
        .select_related("project", "data_steward")
        .annotate(version_count=Count("versions"))
    )


def dataset_get(*, user: Any, pk: int) -> Dataset:
    dataset = Dataset.objects.filter(pk=pk, project__in=project_list(user=user)).select_related("project").first()
    if dataset is None:
        raise NotFound("not_found", f"no dataset {pk}")
    return dataset


def version_list(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    return dataset.versions.select_related("dataset__project", "created_by", "reviewed_by").order_by("number")


def version_get(*, user: Any, pk: int) -> DatasetVersion:
    version = (
        DatasetVersion.objects.filter(pk=pk, dataset__project__in=project_list(user=user))
        .select_related("dataset__project", "created_by", "reviewed_by")
        .first()
    )
    if version is None:
        raise NotFound("not_found", f"no dataset version {pk}")
    return version


def latest_scan(version: DatasetVersion) -> PiiScan | None:
    return version.scans.order_by("-requested_at").first()
