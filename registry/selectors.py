"""Reads of the registry. Those that take the user return only what the user may see (a project
the user holds no role in answers 404, exactly like one that does not exist); the others are the
services' and workers' own reads, after their caller checked the role."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from common import artifacts
from common.errors import Conflict, NotFound
from governance.models import Project
from governance.selectors import project_list
from registry.models import Dataset, DatasetVersion, PiiScan, ScanStatus


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


def latest_completed_scan(version: DatasetVersion) -> PiiScan | None:
    """The scan whose findings the version's verdict and review are about: its latest succeeded one."""
    return version.scans.filter(status=ScanStatus.SUCCEEDED).order_by("-finished_at", "-pk").first()


def lineage_of_dataset_version(version: DatasetVersion) -> dict[str, list[Any]]:
    """What was derived from a dataset version: derived versions and the model versions trained on
    it or on anything derived from it. (Deployments join in when serving lands.)"""
    from registry.models import ModelVersion

    derived: list[DatasetVersion] = []
    frontier = [version]
    while frontier:
        children = list(DatasetVersion.objects.filter(parent__in=frontier).select_related("dataset"))
        derived.extend(children)
        frontier = children
    sources = [version, *derived]
    models = list(
        ModelVersion.objects.filter(dataset_versions__in=sources).select_related("model").distinct().order_by("pk")
    )
    descendants = list(models)
    frontier_models = models
    while frontier_models:
        children_models = list(ModelVersion.objects.filter(base__in=frontier_models).select_related("model"))
        descendants.extend(m for m in children_models if m not in descendants)
        frontier_models = children_models
    return {"derived_dataset_versions": derived, "model_versions": descendants}


def lineage_of_model_version(model_version: Any) -> dict[str, list[Any]]:
    """Where a model version came from: its chain of base versions and every dataset version
    that went into it or into a base (with the versions those were derived from)."""
    bases = []
    current = model_version.base
    while current is not None:
        bases.append(current)
        current = current.base
    datasets: list[DatasetVersion] = []
    for mv in [model_version, *bases]:
        for dv in mv.dataset_versions.select_related("dataset").all():
            while dv is not None and dv not in datasets:
                datasets.append(dv)
                dv = dv.parent
    return {"base_model_versions": bases, "dataset_versions": datasets}


def model_list(*, user: Any, project: Project) -> QuerySet[Any]:
    from registry.models import Model

    return Model.objects.filter(project__in=project_list(user=user), project=project).select_related("project", "owner")


def model_version_get(*, user: Any, pk: int) -> Any:
    from registry.models import ModelVersion

    version = (
        ModelVersion.objects.filter(pk=pk, model__project__in=project_list(user=user))
        .select_related("model__project", "base", "created_by")
        .first()
    )
    if version is None:
        raise NotFound("not_found", f"no model version {pk}")
    return version


def model_get(*, user: Any, pk: int) -> Any:
    from registry.models import Model

    model = Model.objects.filter(pk=pk, project__in=project_list(user=user)).select_related("project").first()
    if model is None:
        raise NotFound("not_found", f"no model {pk}")
    return model


def prompt_template_get(*, user: Any, pk: int) -> Any:
    """A prompt template of a project the user holds a role in; any other answers like a missing one."""
    from registry.models import PromptTemplate

    template = (
        PromptTemplate.objects.filter(pk=pk, project__in=project_list(user=user)).select_related("project").first()
    )
    if template is None:
        raise NotFound("not_found", f"no prompt template {pk}")
    return template


def prompt_template_list(*, user: Any, project: Project) -> QuerySet[Any]:
    from registry.models import PromptTemplate

    return PromptTemplate.objects.filter(project__in=project_list(user=user), project=project).select_related(
        "project", "owner"
    )


def dataset_version_get(*, pk: int) -> DatasetVersion:
    version = DatasetVersion.objects.select_related("dataset__project").filter(pk=pk).first()
    if version is None:
        raise NotFound("not_found", f"no dataset version {pk}")
    return version


def dataset_version_bytes(version: DatasetVersion) -> bytes:
    """The version's bytes, checked against its content hash; a 409 when they are gone or changed
    (``blob_missing``, ``blob_corrupt``), never a 500 nor a task that dies with its row running.
    Every app that reads a dataset version's bytes reads them here."""
    try:
        return artifacts.read_blob(version.sha256)
    except artifacts.ArtifactCorrupt as exc:
        raise Conflict("blob_corrupt", f"dataset version {version.pk}: {exc}") from None
    except artifacts.ArtifactMissing as exc:
        raise Conflict("blob_missing", f"dataset version {version.pk}: {exc}") from None
