"""Records of processing activities (GDPR Art. 30(1)): one row per dataset with its PII scan
findings, then the lineage of every version, erased ones included: the models trained on it,
the models built on those through a base model, and where each runs."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from audits.reports.builders.shared import (
    Progress,
    day,
    descendants,
    first_entries,
    index_of,
    model_name,
    payload,
)
from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import BarChart, Digest, Heading, Paragraph, Table


def _deployments(model_pks: list[int]) -> dict[int, list[Any]]:
    from serving.models import Deployment

    found: dict[int, list[Any]] = defaultdict(list)
    for d in (
        Deployment.objects.filter(model_version_id__in=model_pks)
        .order_by("pk")
        .only("pk", "name", "environment", "state", "model_version_id")
    ):
        found[d.model_version_id].append(d)
    return found


def lineage_rows(versions: list[Any], size: int, claims: Claims) -> tuple[list[list[object]], list[int | None]]:
    """One row per (dataset version, model version that holds its data): trained on it directly,
    or built on such a model through its base model, at any depth; with the deployments of that
    model in any state. Erased versions stay, marked with their erasure's entry."""
    from registry.models import ModelVersion

    trained: dict[int, list[Any]] = defaultdict(list)
    through = ModelVersion.dataset_versions.through.objects.filter(datasetversion_id__in=[v.pk for v in versions])
    direct = {mv.pk: mv for mv in ModelVersion.objects.filter(pk__in=through.values("modelversion_id"))
              .select_related("model", "base__model")}  # fmt: skip
    for link in through.order_by("modelversion_id"):
        trained[link.datasetversion_id].append(direct[link.modelversion_id])
    inherited = descendants(direct.values())
    everything = {mv.pk: mv for mv in direct.values()}
    everything.update({child.pk: child for children in inherited.values() for child in children})
    deployments = _deployments(list(everything))
    registered = first_entries(size, "model_version.registered", "model_version", everything)
    erasures = first_entries(size, "dataset_version.erased", "dataset_version", [v.pk for v in versions if v.erased_at])
    rows: list[list[object]] = []
    citations: list[int | None] = []
    for v in versions:
        name = f"{v.dataset.project.slug}/{v.dataset.slug} v{v.number}"
        erasure = erasures.get(str(v.pk))
        if v.erased_at:
            state = f"ERASED {day(v.erased_at)}: {v.erased_reason}"
            if erasure is not None:
                state += f" (ledger #{erasure.index})"
                claims.add(f"{name} was erased", erasure.index, "action", "dataset_version.erased")
        else:
            state = "current"
        holders = [(mv, "trained on it") for mv in trained.get(v.pk, [])]
        holders += [(child, f"built on {model_name(child.base)}, trained on it") for mv in trained.get(v.pk, [])
                    for child in inherited.get(mv.pk, [])]  # fmt: skip
        if not holders:
            rows.append([name, state, "none", "", "none"])
            citations.append(index_of(erasure))
            continue
        for mv, how in holders:
            entry = registered.get(str(mv.pk))
            claims.add(f"{model_name(mv)}: weights digest", index_of(entry), "subject.digest", mv.weights_digest)
            if mv.base is not None and how.startswith("built on"):
                claims.add(f"{model_name(mv)}: base model", index_of(entry), "payload.base", mv.base.weights_digest)
            runs_on = "; ".join(f"{d.name} ({d.environment}, {d.state})" for d in deployments.get(mv.pk, [])) or "none"
            rows.append([name, state, model_name(mv), how, runs_on])
            citations.append(index_of(entry))
    return rows, citations


def records_of_processing(
    run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any
) -> tuple[str, list[Any]]:
    """One row per processing activity (dataset): Art. 30(1)(b)-(f), with the PII scan results;
    then the lineage of every dataset version to the models and deployments that hold its data."""
    from registry.models import Dataset, DatasetVersion, PiiScan

    progress(10, "reading datasets")
    datasets = Dataset.objects.select_related("project", "data_steward").order_by("project__slug", "slug")
    if run.project:
        datasets = datasets.filter(project=run.project)
    datasets = list(datasets)
    progress(30, "reading versions and PII scans")
    versions = list(
        DatasetVersion.objects.filter(dataset__in=datasets)
        .select_related("dataset__project")
        .order_by("dataset__project__slug", "dataset__slug", "number")
    )
    entities: dict[int, Counter[str]] = defaultdict(Counter)
    version_dataset = {v.pk: v.dataset_id for v in versions}
    for scan in PiiScan.objects.filter(version_id__in=list(version_dataset), status="succeeded").only(
        "version_id", "findings"
    ):
        for entity, found in (scan.findings or {}).items():
            count = found.get("count", 1) if isinstance(found, dict) else 1
            entities[version_dataset[scan.version_id]][entity] += count
    created = first_entries(size, "dataset.created", "dataset", [d.pk for d in datasets])
    rows, citations = [], []
    for d in datasets:
        entry = created.get(str(d.pk))
        if entry is not None:
            said = payload(entry)
            # The creation entry records purpose and lawful basis; the report cites it for them.
            if said.get("purpose") == d.purpose:
                claims.add(f"{d.project.slug}/{d.slug}: purpose", entry.index, "payload.purpose", d.purpose)
            if said.get("lawful_basis") == d.lawful_basis:
                claims.add(f"{d.project.slug}/{d.slug}: lawful basis", entry.index, "payload.lawful_basis",
                           d.lawful_basis)  # fmt: skip
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
        ])  # fmt: skip
        citations.append(index_of(entry))
    progress(50, "following lineage to models and deployments, erased versions included")
    lineage, lineage_citations = lineage_rows(versions, size, claims)
    progress(70, "laying out")
    lawful = Counter(d.get_lawful_basis_display() for d in datasets)
    sections = [
        BarChart("Processing activities by lawful basis", sorted(lawful),
                 {"datasets": [float(lawful[k]) for k in sorted(lawful)]}),
        Heading("Processing activities (Art. 30(1)(b)-(f))"),
        Table(["activity", "purpose (b)", "lawful basis", "data subjects (c)", "personal data (c)",
               "PII scan findings", "recipients (d)", "third countries, safeguards (e)", "erasure limit (f)", "source"],
              rows, citations),
        Heading("Dataset versions and the models that hold their data"),
        Paragraph("Every version of every dataset above, erased ones included: the model versions trained on it, "
                  "the model versions built on those through a base model (they inherit its data), and the "
                  "deployments of each, in any state. An erased version's row cites its erasure entry."),
        Table(["dataset version", "state", "model version", "how it holds the data", "deployments"],
              lineage, lineage_citations),
        Heading("Content digests of the dataset versions"),
        Table(["dataset version", "SHA-256 of the content"],
              [[f"{v.dataset.project.slug}/{v.dataset.slug} v{v.number}", Digest(v.sha256)] for v in versions]),
    ]  # fmt: skip
    return "Records of processing activities (GDPR Art. 30(1))", sections
