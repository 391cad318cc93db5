"""The registry's governed subjects and evidence checks, plugged into governance."""

from __future__ import annotations

from typing import Any

from governance.evidence import register_check
from governance.subjects import (
    Fact,
    SubjectType,
    authors_by_field,
    names_by_pk,
    register_subject_type,
    register_summary,
)


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
    dataset.project = rows.load(Project, found[0], rows.width(DatasetVersion) + rows.width(Dataset))
    version.dataset = dataset
    return version


def _describe(version: Any) -> dict[str, Any]:
    from registry.rules import use_status

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
    from registry.rules import use_status

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


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


def _counted(count: int | None, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _pii_facts(version: Any) -> list[Fact]:
    """What a decider asks of a dataset version: its record of processing in short, its latest
    PII scan (status, and per entity type how many hits in how many records), the steward's
    review and whether it may be used."""
    from registry.models import PiiVerdict, Review, ScanStatus
    from registry.rules import use_status
    from registry.selectors import latest_scan

    dataset = version.dataset
    facts = [
        Fact("dataset", f"{dataset.name} ({dataset})", link=dataset),
        Fact("purpose", f"{dataset.purpose}; lawful basis {dataset.get_lawful_basis_display()}"),
        Fact("records", f"{_counted(version.record_count, 'record')} "
                        f"({_counted(version.duplicate_count, 'duplicate')}), "
                        f"{version.format}, {_counted(version.size_bytes, 'byte')}"),
    ]  # fmt: skip
    scan = latest_scan(version)
    if scan is None:
        facts.append(Fact("PII scan", "not scanned yet", tone="warning"))
    elif scan.status == ScanStatus.SUCCEEDED:
        scanned = _counted(scan.records_scanned, "record")
        facts.append(Fact("PII scan", f"succeeded {_when(scan.finished_at)}, {scanned} scanned", link=scan, tone="ok"))
        found = [
            f"{entity}: {hits.get('count', 0)} in {_counted(hits.get('records', 0), 'record')}"
            for entity, hits in sorted((scan.findings or {}).items())
        ]
        facts.append(
            Fact("personal data found", "; ".join(found) if found else "none", tone="warning" if found else "ok")
        )
    elif scan.status == ScanStatus.FAILED:
        facts.append(Fact("PII scan", f"failed {_when(scan.finished_at)}: {scan.error}", link=scan, tone="bad"))
    else:
        facts.append(Fact("PII scan", f"{scan.status} since {_when(scan.requested_at)}", link=scan, tone="warning"))
    if version.pii_verdict == PiiVerdict.FOUND:
        reviewed = version.review != Review.UNREVIEWED
        by = f" by {version.reviewed_by.get_username()}, {_when(version.reviewed_at)}" if version.reviewed_by else ""
        facts.append(
            Fact("steward's review", f"{version.get_review_display()}{by}", tone="" if reviewed else "warning")
        )
    usable, reason = use_status(version)
    facts.append(Fact("usable", f"{'yes' if usable else 'no'}: {reason}", tone="ok" if usable else "bad"))
    return facts


def _lineage_facts(version: Any) -> list[Fact]:
    """Where a model version came from: its weights, its chain of bases, the dataset versions in
    its lineage (with whether each may be used now) and the run that made it."""
    from registry.rules import use_status
    from registry.selectors import lineage_of_model_version

    lineage = lineage_of_model_version(version)
    facts = [Fact("weights", f"{version.weights_digest}, {len(version.files)} files, {version.size_bytes} bytes")]
    facts += [Fact("base model version", str(base), link=base) for base in lineage["base_model_versions"]]
    if not lineage["base_model_versions"]:
        facts.append(Fact("base model version", f"none: registered from {version.source}"))
    for dataset_version in lineage["dataset_versions"]:
        usable, reason = use_status(dataset_version)
        facts.append(Fact("trained on", f"{dataset_version}: {reason}", link=dataset_version,
                          tone="" if usable else "bad"))  # fmt: skip
    made = version.lineage or {}
    if made.get("fine_tune_run"):
        facts.append(Fact("made by", f"fine-tune run {made['fine_tune_run']} (attempt {made.get('attempt', 1)})"))
    if version.mlflow_model_name:
        facts.append(Fact("MLflow", f"{version.mlflow_model_name} version {version.mlflow_version}"))
    return facts


def register() -> None:
    from registry.models import DatasetVersion, ModelVersion
    from registry.rules import dataset_version_digest

    register_subject_type(
        SubjectType(
            name="dataset_version",
            get=_dataset_version,
            project=lambda version: version.dataset.project,
            digest=dataset_version_digest,
            describe=_describe,
            actions=("dataset_version.use_for_training", "dataset_version.use_for_evaluation"),
            context=_dataset_version_context,
            authors=lambda version: [version.created_by_id],
            authors_by_id=authors_by_field(DatasetVersion, "created_by"),
            names_by_id=names_by_pk(DatasetVersion, "dataset__project"),
        )
    )
    register_check("personal_data_reviewed", "dataset_version", _personal_data_reviewed)
    register_summary("dataset_version", _pii_facts)
    # Model versions are governed for their deployment (``model_version.deploy``); the audits
    # register the evidence checks a deployment policy asks for.
    register_subject_type(
        SubjectType(
            name="model_version",
            get=_model_version,
            project=lambda version: version.model.project,
            digest=_model_version_digest,
            describe=_describe_model_version,
            actions=("model_version.deploy",),
            authors=lambda version: [version.created_by_id],
            authors_by_id=authors_by_field(ModelVersion, "created_by"),
            names_by_id=names_by_pk(ModelVersion, "model__project"),
        )
    )
    register_summary("model_version", _lineage_facts)
