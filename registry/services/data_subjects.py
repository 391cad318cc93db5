"""Data subjects in the datasets: finding the versions that hold a person's identifier, and erasing
a person's records from a version (GDPR Art. 17, a CCPA request to delete)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from governance.services import subject_pending_requests_withdraw
from governance.services.approvals import approvals_lapse
from registry.models import DatasetVersion, DataSubjectIndexEntry
from registry.selectors import dataset_version_bytes
from registry.services.datasets import _blob_delete_unless_live, _version_subject
from registry.services.derived import _register_derived


def data_subject_lookup(*, actor: Any, project: Project, kind: str, identifier: str) -> list[DatasetVersion]:
    """The dataset versions of ``project`` whose scans found this identifier. The lookup is
    recorded in the ledger by its keyed hash, never in clear."""
    from registry import pii

    require_project_role(actor, project, {Role.COMPLIANCE_OFFICER}, "a data-subject lookup")
    try:
        key = pii.subject_key(kind, identifier, settings.DATA_SUBJECT_INDEX_KEY)
    except ValueError as exc:
        raise DomainError("invalid_input", str(exc), fields={"kind": [str(exc)]}) from None
    versions = list(
        DatasetVersion.objects.filter(dataset__project=project, subject_index__kind=kind, subject_index__key_hash=key)
        .select_related("dataset")
        .distinct()
        .order_by("dataset__slug", "number")
    )
    ledger_append(
        actor=actor,
        action="data_subject.looked_up",
        subject=Subject("project", project.slug),
        payload={"kind": kind, "key_hash": key, "versions": [v.pk for v in versions]},
    )
    return versions


def _without_records(version: DatasetVersion, data: bytes, drop: set[int]) -> tuple[bytes, int]:
    """The version's bytes without the records numbered ``drop``, in its format; and how many remain."""
    import csv
    import io

    from registry.records import READERS

    kept = 0
    if version.format in ("jsonl", "text"):
        # Record numbers are line numbers here: the other lines are kept byte for byte.
        lines = data.decode("utf-8-sig").splitlines()
        out_lines = []
        for number, line in enumerate(lines, start=1):
            if line.strip() and number not in drop:
                out_lines.append(line + "\n")
                kept += 1
        return "".join(out_lines).encode(), kept
    if version.format == "csv":
        header = next(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for record in READERS["csv"](data):
            if record.number not in drop:
                writer.writerow([record.fields.get(name, "") for name in header])
                kept += 1
        return out.getvalue().encode(), kept
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    mask = pa.array([row not in drop for row in range(1, table.num_rows + 1)])
    table = table.filter(mask)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes(), table.num_rows


def dataset_version_erase_records(
    *, actor: Any, version: DatasetVersion, record_numbers: set[int], reason: str
) -> DatasetVersion | None:
    """Replace ``version`` by a derived version without the records ``record_numbers`` (a
    person's, under GDPR Art. 17 or a CCPA request to delete). Compliance officers only.

    In one transaction: registers the new version (derivation ``erased``, lineage to the old one,
    a fresh PII scan), marks the old one erased, lapses its approvals for good, withdraws its
    pending approval requests and drops its subject-index entries; once it
    commits, the old blob is deleted unless a version that is not erased holds the same bytes.
    Returns the new version, or None when no record remains (the old one is still erased). The
    caller decides which records are the person's; models trained on the old bytes are not
    touched here (the data-subject request workflow opens their reviews).
    """
    require_project_role(actor, version.dataset.project, {Role.COMPLIANCE_OFFICER}, "erasing records")
    if not reason.strip():
        raise DomainError("invalid_input", "an erasure needs a reason", fields={"reason": ["may not be blank"]})
    if not record_numbers:
        raise DomainError("invalid_input", "name the records to erase", fields={"record_numbers": ["empty"]})
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().select_related("dataset__project").get(pk=version.pk)
        if version.erased_at is not None:
            raise Conflict("already_erased", f"{version} was already erased ({version.erased_reason})")
        data = dataset_version_bytes(version)
        from registry.records import read_records

        present = {record.number for record in read_records(data, version.format)}
        unknown = sorted(set(record_numbers) - present)
        if unknown:
            raise DomainError(
                "invalid_input", f"{version} has no record {unknown[0]}", fields={"record_numbers": unknown[:20]}
            )
        derived, kept = _without_records(version, data, set(record_numbers))
        new: DatasetVersion | None = None
        if kept:
            new, _ = _register_derived(
                actor=actor, version=version, data=derived, derivation="erased", role_checked=True,
                details={"reason": reason, "records_removed": len(record_numbers)},
            )  # fmt: skip
        version.erased_at, version.erased_reason = timezone.now(), reason[:200]
        version.save(update_fields=["erased_at", "erased_reason"])
        # Its approvals lapse for good (a restore or a new digest never brings them back), and a
        # pending request about it is withdrawn: nothing may be approved for an erased version.
        erased = f"the dataset version was erased: {reason[:200]}"
        approvals_lapse(subject_type="dataset_version", subject_id=str(version.pk), digest=None, reason=erased)
        subject_pending_requests_withdraw(subject_type="dataset_version", subject_id=str(version.pk), reason=erased)
        DataSubjectIndexEntry.objects.filter(version=version).delete()
        shared = list(
            DatasetVersion.objects.filter(sha256=version.sha256, erased_at__isnull=True).values_list("pk", flat=True)
        )
        ledger_append(
            actor=actor, action="dataset_version.erased", subject=_version_subject(version),
            payload={"reason": reason, "records_removed": len(record_numbers), "records_kept": kept,
                     "replaced_by": new.pk if new else None, "blob": version.sha256,
                     "blob_deleted": not shared, "blob_kept_for": shared},
        )  # fmt: skip
        transaction.on_commit(partial(_blob_delete_unless_live, version.sha256))
    return new
