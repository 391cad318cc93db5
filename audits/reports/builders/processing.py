"""Records of processing activities (GDPR Art. 30(1)): one row per dataset, with its PII scan
findings and the models and deployments that use it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from audits.reports.builders.shared import Progress, entries
from audits.reports.models import ReportRun
from audits.reports.pdf import BarChart, Heading, KeyValues, Paragraph, Table


def _lineage(version_pks: Iterable[int]) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """Per dataset version: the model versions trained on it, and their deployments."""
    from registry.models import ModelVersion
    from serving.models import Deployment

    models: dict[int, set[str]] = defaultdict(set)
    deployments: dict[int, set[str]] = defaultdict(set)
    through = ModelVersion.dataset_versions.through.objects.filter(datasetversion_id__in=list(version_pks))
    by_model: dict[int, set[int]] = defaultdict(set)
    names = {mv.pk: f"{mv.model.slug} v{mv.number}" for mv in ModelVersion.objects.filter(
        pk__in=through.values("modelversion_id")).select_related("model")}  # fmt: skip
    for link in through:
        models[link.datasetversion_id].add(names[link.modelversion_id])
        by_model[link.modelversion_id].add(link.datasetversion_id)
    for d in Deployment.objects.filter(model_version_id__in=list(by_model)).only(
        "pk", "name", "environment", "state", "model_version_id"
    ):
        for version in by_model[d.model_version_id]:
            deployments[version].add(f"{d.name} ({d.environment}, {d.state})")
    return models, deployments


def records_of_processing(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """One row per processing activity (dataset): Art. 30(1)(a)-(g), with the PII scan results and
    the models and deployments that use the dataset."""
    from registry.models import Dataset, DatasetVersion, PiiScan

    progress(10, "reading datasets")
    datasets = Dataset.objects.select_related("project", "data_steward").order_by("project__slug", "slug")
    if run.project:
        datasets = datasets.filter(project=run.project)
    datasets = list(datasets)
    progress(30, "reading versions and PII scans")
    versions = defaultdict(list)
    for v in DatasetVersion.objects.filter(dataset__in=datasets, erased_at__isnull=True).only(
        "pk", "dataset_id", "number", "pii_verdict", "review"
    ):
        versions[v.dataset_id].append(v)
    entities: dict[int, Counter[str]] = defaultdict(Counter)
    version_dataset = {v.pk: d for d, vs in versions.items() for v in vs}
    for scan in PiiScan.objects.filter(version_id__in=list(version_dataset), status="succeeded").only(
        "version_id", "findings"
    ):
        for entity, found in (scan.findings or {}).items():
            count = found.get("count", 1) if isinstance(found, dict) else 1
            entities[version_dataset[scan.version_id]][entity] += count
    progress(50, "following lineage to models and deployments")
    models, deployments = _lineage(version_dataset)
    created = (
        {(e.subject_id): e.index for e in entries(size, action="dataset.created").only("index", "subject_id")}
        if len(datasets) < 50_000
        else {}
    )
    rows, citations = [], []
    for d in datasets:
        dvs = versions.get(d.pk, [])
        found = entities.get(d.pk, Counter())
        transfers = "; ".join(f"{t.get('country')}: {t.get('safeguard')}" if isinstance(t, dict) else str(t)
                              for t in d.third_country_transfers) or "none"  # fmt: skip
        rows.append([
            f"{d.project.slug}/{d.slug}", d.purpose, d.get_lawful_basis_display(),
            ", ".join(d.data_subject_categories) or "not recorded",
            ", ".join(sorted(set(d.personal_data_categories) | set(found))) or "none found",
            ", ".join(f"{k} {n}" for k, n in sorted(found.items())) or "no findings",
            ", ".join(d.recipients) or "none outside the controller", transfers,
            f"{d.retention_days} days", d.source,
            ", ".join(sorted({m for v in dvs for m in models.get(v.pk, ())})) or "none",
            ", ".join(sorted({x for v in dvs for x in deployments.get(v.pk, ())})) or "none",
        ])  # fmt: skip
        citations.append(created.get(str(d.pk)))
    progress(70, "laying out")
    lawful = Counter(d.get_lawful_basis_display() for d in datasets)
    sections = [
        Heading("Controller (Art. 30(1)(a))"),
        KeyValues([("controller", settings.REPORTS_CONTROLLER), ("contact", settings.REPORTS_CONTROLLER_CONTACT),
                   ("representative", settings.REPORTS_REPRESENTATIVE),
                   ("data protection officer", settings.REPORTS_DPO)]),
        Heading("Security measures (Art. 30(1)(g), Art. 32)"),
        Paragraph(settings.REPORTS_SECURITY_MEASURES),
        BarChart("Processing activities by lawful basis", sorted(lawful),
                 {"datasets": [float(lawful[k]) for k in sorted(lawful)]}),
        Heading("Processing activities (Art. 30(1)(b)-(f))"),
        Table(["activity", "purpose (b)", "lawful basis", "data subjects (c)", "personal data (c)",
               "PII scan findings", "recipients (d)", "third countries, safeguards (e)", "erasure limit (f)", "source",
               "models trained on it", "deployments"], rows, citations),
    ]  # fmt: skip
    return "Records of processing activities (GDPR Art. 30(1))", sections
