"""The registry's governed subjects and evidence checks, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import SubjectType, register_subject_type


def _dataset_version(pk: str) -> Any:
    """The version with its dataset and project. Every decision on a dataset version reads it for
    its digest: hand-written (common/db/rows.py) rather than a queryset compiled on every call."""
    from common.db import rows
    from governance.models import Project
    from registry.models import Dataset, DatasetVersion

    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        return None
    found = rows.fetch(
        f"SELECT {rows.columns(DatasetVersion, 'v')}, {rows.columns(Dataset, 'd')}, {rows.columns(Project, 'p')} "  # noqa: S608 (names from model metadata)
        f"FROM {rows.table(DatasetVersion)} v INNER JOIN {rows.table(Dataset)} d ON d.id = v.dataset_id "
        f"INNER JOIN {rows.table(Project)} p ON p.id = d.project_id WHERE v.id = %s",
        [int(pk)],
    )
    if not found:
        return None
    version = rows.load(DatasetVersion, found[0])
    dataset = rows.load(Dataset, found[0], rows.width(DatasetVersion))
    rows.attach(dataset, "project", rows.load(Project, found[0], rows.width(DatasetVersion) + rows.width(Dataset)))
    rows.attach(version, "dataset", dataset)
    return version


def _describe(version: Any) -> dict[str, Any]:
    from registry.services import use_status

    usable, reason = use_status(version)
    return {
        "dataset": str(version.dataset),
        "number": version.number,
        "content_sha256": version.sha256,
        "records": version.record_count,
        "pii_verdict": version.pii_verdict,
        "review": version.review,
        "usable": usable,
        "usable_reason": reason,
    }


def _dataset_version_context(version: Any) -> dict[str, str]:
    """A version that holds personal data (found by its scan, not ruled a false positive) is high
    risk whatever the requester says: its policy then asks for the compliance officer too."""
    from registry.models import PiiVerdict, Review

    if version.pii_verdict == PiiVerdict.FOUND and version.review != Review.FALSE_POSITIVE:
        return {"risk_tier": "high"}
    return {}


def _personal_data_reviewed(version: Any) -> tuple[bool, str]:
    from registry.services import use_status

    return use_status(version)


def _model_version(pk: str) -> Any:
    from registry.models import ModelVersion

    if not (str(pk).isascii() and str(pk).isdigit()) or int(pk) >= 2**63:
        return None
    return ModelVersion.objects.select_related("model__project").filter(pk=int(pk)).first()


def _model_version_digest(version: Any) -> str:
    from common.digests import canonical_digest

    return canonical_digest({"model": str(version.model), "number": version.number, "weights": version.weights_digest})


def _describe_model_version(version: Any) -> dict[str, Any]:
    return {
        "model": str(version.model), "number": version.number, "weights_digest": version.weights_digest,
        "base": version.base_id, "lineage": version.lineage,
    }  # fmt: skip


def register() -> None:
    from registry.services import dataset_version_digest

    register_subject_type(
        SubjectType(
            name="dataset_version",
            get=_dataset_version,
            project=lambda version: version.dataset.project,
            digest=dataset_version_digest,
            describe=_describe,
            context=_dataset_version_context,
            authors=lambda version: [version.created_by_id],
        )
    )
    register_check("personal_data_reviewed", "dataset_version", _personal_data_reviewed)
    # Model versions are governed for their deployment (``model_version.deploy``); the audits
    # register the evidence checks a deployment policy asks for.
    register_subject_type(
        SubjectType(
            name="model_version",
            get=_model_version,
            project=lambda version: version.model.project,
            digest=_model_version_digest,
            describe=_describe_model_version,
            authors=lambda version: [version.created_by_id],
        )
    )
