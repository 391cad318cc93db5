"""Writes of the registry. Each checks the actor's role in the project, changes the rows and
appends its ledger entries in one transaction; scans are dispatched after commit."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common import artifacts
from common.claims import ClaimedJobs, worker_identity
from common.digests import canonical_digest
from common.errors import Conflict, DomainError, NotFound
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import (
    Dataset,
    DatasetVersion,
    DataSubjectIndexEntry,
    LawfulBasis,
    PiiScan,
    PiiVerdict,
    Review,
    ScanStatus,
)
from registry.records import RecordError, format_of, quality_of

logger = logging.getLogger(__name__)
WRITERS = {Role.DATA_STEWARD, Role.ML_ENGINEER}


def dataset_version_digest(version: DatasetVersion) -> str:
    """The governed fields of a version: content, format and the state of its PII review."""
    return canonical_digest(
        {
            "dataset": str(version.dataset),
            "number": version.number,
            "content_sha256": version.sha256,
            "format": version.format,
            "pii_verdict": version.pii_verdict,
            "review": version.review,
        }
    )


def _version_subject(version: DatasetVersion) -> Subject:
    return Subject(type="dataset_version", id=str(version.pk), digest=dataset_version_digest(version))


def dataset_create(
    *,
    actor: Any,
    project: Project,
    slug: str,
    name: str,
    purpose: str,
    lawful_basis: str,
    retention_days: int,
    source: str,
    data_steward: Any,
    description: str = "",
    data_subject_categories: list[str] | None = None,
    personal_data_categories: list[str] | None = None,
    recipients: list[str] | None = None,
    third_country_transfers: list[str] | None = None,
) -> Dataset:
    require_project_role(actor, project, {Role.DATA_STEWARD}, "registering a dataset")
    if lawful_basis not in LawfulBasis.values:
        raise DomainError(
            "invalid_input",
            f"lawful_basis must be one of {', '.join(LawfulBasis.values)}",
            fields={"lawful_basis": [f"got {lawful_basis!r}"]},
        )
    with transaction.atomic():
        if Dataset.objects.filter(project=project, slug=slug).exists():
            raise Conflict("dataset_exists", f"project {project.slug} already has a dataset {slug!r}")
        dataset = Dataset(
            project=project, slug=slug, name=name, description=description, purpose=purpose,
            lawful_basis=lawful_basis, retention_days=retention_days, source=source, data_steward=data_steward,
            data_subject_categories=data_subject_categories or [],
            personal_data_categories=personal_data_categories or [],
            recipients=recipients or [], third_country_transfers=third_country_transfers or [],
        )  # fmt: skip
        dataset.full_clean()
        dataset.save()
        ledger_append(
            actor=actor,
            action="dataset.created",
            subject=Subject("dataset", str(dataset.pk)),
            payload={"project": project.slug, "slug": slug, "purpose": purpose, "lawful_basis": lawful_basis},
        )
    return dataset


def dataset_version_upload(*, actor: Any, dataset: Dataset, filename: str, data: bytes) -> tuple[DatasetVersion, bool]:
    """Register ``data`` as a version of ``dataset``; returns (version, created).

    The file is parsed in full first: an empty file, a malformed line, an unsupported type or a
    file over ``REGISTRY_MAX_UPLOAD_BYTES`` is refused and nothing is stored; so are the bytes of a
    version erased for a data subject (``content_erased``, checked before they reach the store).
    Identical bytes give the existing version back (one blob, no new version). A new version gets a
    PII scan.
    """
    require_project_role(actor, dataset.project, WRITERS, "adding a dataset version")
    return _dataset_version_store(actor=actor, dataset=dataset, filename=filename, data=data)


def _dataset_version_store(*, actor: Any, dataset: Dataset, filename: str, data: bytes) -> tuple[DatasetVersion, bool]:
    """The upload without its role check, for a caller that checked another role (an erasure)."""
    if len(data) > settings.REGISTRY_MAX_UPLOAD_BYTES:
        raise DomainError(
            "file_too_large",
            f"the file is {len(data)} bytes; REGISTRY_MAX_UPLOAD_BYTES is {settings.REGISTRY_MAX_UPLOAD_BYTES}",
            status_code=413,
        )
    if not data:
        raise DomainError("empty_file", "the file is empty", fields={"file": ["empty"]})
    try:
        fmt = format_of(filename)
        quality = quality_of(data, fmt)
    except RecordError as exc:
        fields = {"file": [str(exc)]}
        raise DomainError("invalid_file", f"{filename}: {exc}", fields=fields) from None
    # Hashed before anything is stored: bytes erased for a data subject never reach the store again.
    digest = hashlib.sha256(data).hexdigest()
    erased = DatasetVersion.objects.filter(dataset=dataset, sha256=digest, erased_at__isnull=False).first()
    if erased is not None:
        raise _content_erased(erased)
    _, size = artifacts.put_bytes(data)
    with transaction.atomic():
        # Uploads to one dataset one at a time (its next number; PostgreSQL: a row lock).
        Dataset.objects.select_for_update().filter(pk=dataset.pk).values_list("pk", flat=True).first()
        existing = DatasetVersion.objects.filter(dataset=dataset, sha256=digest).first()
        if existing is not None and existing.erased_at is not None:
            # Erased since the check above: take the bytes out now (an on_commit would be rolled
            # back with the refusal), unless a live version holds them.
            _blob_delete_unless_live(digest)
            raise _content_erased(existing)
        if existing is not None:
            return existing, False
        number = (dataset.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        try:
            with transaction.atomic():
                version = DatasetVersion.objects.create(
                    dataset=dataset, number=number, sha256=digest, size_bytes=size, format=fmt,
                    original_name=Path(filename).name[:255], record_count=quality.records,
                    duplicate_count=quality.duplicates, created_by=actor,
                )  # fmt: skip
        except IntegrityError:
            raise Conflict("concurrent_upload", "another upload of this dataset committed first; retry") from None
        ledger_append(
            actor=actor,
            action="dataset_version.registered",
            subject=_version_subject(version),
            payload={
                "dataset": str(dataset),
                "number": number,
                "content_sha256": digest,
                "size_bytes": size,
                "format": fmt,
                "records": quality.records,
                "duplicates": quality.duplicates,
            },
        )
        _scan_request(actor=actor, version=version)
    return version, True


def _content_erased(erased: DatasetVersion) -> Conflict:
    return Conflict("content_erased", f"these bytes are {erased}, erased ({erased.erased_reason}); not stored again")


def dataset_version_register_path(*, actor: Any, dataset: Dataset, path: str) -> tuple[DatasetVersion, bool]:
    """Register a file already on the server; it must lie under one of ``REGISTRY_ALLOWED_ROOTS``."""
    # The role first: a caller without it learns nothing about the server's files.
    require_project_role(actor, dataset.project, WRITERS, "adding a dataset version")
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError) as exc:
        raise _unreadable("path", path, exc) from None
    if not any(resolved.is_relative_to(root) for root in settings.REGISTRY_ALLOWED_ROOTS):
        raise DomainError(
            "path_not_allowed",
            f"{path} is outside the allowed roots (REGISTRY_ALLOWED_ROOTS)",
            fields={"path": ["outside the allowed roots"]},
        )
    try:
        if not resolved.is_file():
            raise DomainError("path_not_found", f"{path} is not a file", fields={"path": ["not a file"]})
        if resolved.stat().st_size > settings.REGISTRY_MAX_UPLOAD_BYTES:
            raise DomainError("file_too_large", f"{path} is over REGISTRY_MAX_UPLOAD_BYTES", status_code=413)
        data = resolved.read_bytes()
    except OSError as exc:  # a name too long, a folder it may not enter, a file it may not read
        raise _unreadable("path", path, exc) from None
    return dataset_version_upload(actor=actor, dataset=dataset, filename=resolved.name, data=data)


def _unreadable(field: str, path: str | Path, exc: OSError | ValueError) -> DomainError:
    """A path under an allowed root that the server cannot use, named with the system's reason."""
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return DomainError("invalid_input", f"{path} cannot be read: {reason}", fields={field: [reason]})


def _file_chunks(path: Path, field: str) -> Iterator[bytes]:
    """A file's bytes in chunks; a read error is the input's fault (``_unreadable``), not the store's."""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(artifacts.CHUNK):
                yield chunk
    except OSError as exc:
        raise _unreadable(field, path, exc) from None


def _scan_request(*, actor: Any, version: DatasetVersion) -> PiiScan:
    scan = PiiScan.objects.create(version=version)
    ledger_append(
        actor=actor, action="pii_scan.requested", subject=_version_subject(version), payload={"scan": scan.pk}
    )
    dispatch_on_commit("registry.pii_scan", args=(scan.pk,), queue="cpu")
    return scan


def pii_scan_request(*, actor: Any, version: DatasetVersion) -> PiiScan:
    """Scan a version again (after a failure, or with new recognizers)."""
    require_project_role(actor, version.dataset.project, WRITERS, "requesting a PII scan")
    with transaction.atomic():
        if version.scans.filter(status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING]).exists():
            raise Conflict("scan_in_progress", f"a scan of {version} is already queued or running")
        return _scan_request(actor=actor, version=version)


def _summarise(findings: list[tuple[int, str, Any]], samples: int) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    for record, field, hit in findings:
        entry = summary.setdefault(hit.entity, {"count": 0, "records": set(), "samples": []})
        entry["count"] += 1
        entry["records"].add(record)
        if len(entry["samples"]) < samples:
            entry["samples"].append({"record": record, "field": field, "start": hit.start, "end": hit.end})
    return {
        entity: {"count": e["count"], "records": len(e["records"]), "samples": e["samples"]}
        for entity, e in sorted(summary.items())
    }


_PII_SCAN_JOBS = ClaimedJobs(
    PiiScan, "status", ScanStatus.QUEUED, ScanStatus.RUNNING, "requested_at", "PII_SCAN_LEASE_S"
)


def _pii_scan_claim(scan_id: int, me: str) -> bool:
    """Claim a queued scan, or take over a running one whose claim is abandoned (its worker died:
    ``common.claims``). A conditional update each, so two deliveries never both hold it."""
    now = timezone.now()
    if _PII_SCAN_JOBS.claim(scan_id, me, started_at=now):
        return True
    lost = _PII_SCAN_JOBS.take_over(scan_id, me, started_at=now)
    if lost is not None:
        logger.warning("pii scan %s taken over from %s (its worker is gone)", scan_id, lost or "?")
    return lost is not None


def pii_scan_run(*, scan_id: int, actor: Any) -> PiiScan | None:
    """Run one scan (called by the Celery task). Claims the scan by a conditional update, so a
    second delivery does nothing while its worker lives, and takes it over when that worker died;
    only the current claimant records the result. A blob that vanished fails the scan visibly, and
    so does any unexpected error (its type and message on record, the traceback in the log): a
    scan left ``running`` would be taken over and fail again, for ever.

    When the findings (entity types and their counts) differ from those of the version's previous
    completed scan, the steward's review no longer covers them: it is reset to ``unreviewed`` in
    the same transaction, and the scan's ledger entry says so. The digest already holds the review
    (``dataset_version_digest``: "the state of its PII review"), so the reset changes it and
    earlier approvals stop counting. The findings themselves are deliberately not added to the
    digest: that would change every existing version's digest and void every approval given so
    far. Caveat: a steward who reviews the new findings with the same decision as before gives
    the version its earlier digest back, and approvals given to it count again; the steward's
    review is the judgement of the new findings, as it was of the old."""
    from registry import pii
    from registry.records import read_records

    me = worker_identity()
    if not _pii_scan_claim(scan_id, me):
        logger.info("pii scan %s is not queued (claimed by a live worker, done, or gone); nothing to do", scan_id)
        return None
    scan = PiiScan.objects.select_related("version__dataset").get(pk=scan_id)
    version = scan.version
    try:
        data = artifacts.read_blob(version.sha256)
        texts = [
            (r.number, name, value) for r in read_records(data, version.format) for name, value in r.fields.items()
        ]
        scanner = pii.configured_scanner()
        found = scanner.analyze_many((text for _, _, text in texts), processes=settings.PII_SCAN_PROCESSES)
        findings = [(record, field, hit) for record, field, text in texts for hit in found.get(text, [])]
        subject_keys: set[tuple[str, str]] = set()
        for text, hits in found.items():  # distinct texts: each identifier is hashed once
            for hit in hits:
                kind = pii.SUBJECT_KINDS.get(hit.entity)
                if kind:
                    subject_keys.add(
                        (kind, pii.subject_key(kind, text[hit.start : hit.end], settings.DATA_SUBJECT_INDEX_KEY))
                    )
        summary = _summarise(findings, settings.PII_SAMPLE_LOCATIONS)
        engine = scanner.describe()
    except (artifacts.ArtifactMissing, RecordError, OSError, ValueError) as exc:
        return _scan_fail(scan, actor, f"{type(exc).__name__}: {exc}", claimed_by=me)
    except Exception as exc:
        # A bug, not the data: the traceback goes to the log only (it may quote record content).
        logger.exception("pii scan %s: unexpected error", scan.pk)
        return _scan_fail(scan, actor, f"unexpected error: {type(exc).__name__}: {exc}", claimed_by=me)
    verdict = PiiVerdict.FOUND if findings else PiiVerdict.NONE
    counts = {entity: e["count"] for entity, e in summary.items()}
    with transaction.atomic():
        if not PiiScan.objects.filter(pk=scan.pk, status=ScanStatus.RUNNING, claimed_by=me).update(
            status=ScanStatus.SUCCEEDED, finished_at=timezone.now(), findings=summary,
            records_scanned=version.record_count, engine=engine,
        ):  # fmt: skip
            logger.warning("pii scan %s: this worker lost its claim; the claimant records the result", scan.pk)
            return None
        DataSubjectIndexEntry.objects.bulk_create(
            [DataSubjectIndexEntry(key_hash=key, kind=kind, version=version) for kind, key in sorted(subject_keys)],
            ignore_conflicts=True,
        )
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        previous = (
            PiiScan.objects.filter(version=version, status=ScanStatus.SUCCEEDED)
            .exclude(pk=scan.pk)
            .order_by("-finished_at", "-pk")
            .first()
        )
        review_reset = None
        previous_counts = (
            {e: f.get("count") for e, f in (previous.findings or {}).items()} if previous is not None else None
        )
        if previous_counts is not None and previous_counts != counts and version.review != Review.UNREVIEWED:
            review_reset = {
                "previous_review": version.review,
                "previous_scan": previous.pk,
                "previous_counts": previous_counts,
            }
            version.review, version.reviewed_by, version.reviewed_at, version.review_note = (
                Review.UNREVIEWED, None, None, "",
            )  # fmt: skip
        version.pii_verdict = verdict
        version.save(update_fields=["pii_verdict", "review", "reviewed_by", "reviewed_at", "review_note"])
        ledger_append(
            actor=actor,
            action="pii_scan.succeeded",
            subject=_version_subject(version),
            payload={
                "scan": scan.pk,
                "verdict": verdict,
                "counts": counts,
                "records": version.record_count,
                "indexed_identifiers": len(subject_keys),
                "review_reset": review_reset,
            },
        )
    scan.refresh_from_db()
    return scan


def _scan_fail(scan: PiiScan, actor: Any, reason: str, *, claimed_by: str) -> PiiScan | None:
    logger.error("pii scan %s failed: %s", scan.pk, reason)
    with transaction.atomic():
        if not PiiScan.objects.filter(pk=scan.pk, status=ScanStatus.RUNNING, claimed_by=claimed_by).update(
            status=ScanStatus.FAILED, finished_at=timezone.now(), error=reason
        ):
            return None
        version = scan.version
        version.pii_verdict = PiiVerdict.FAILED
        version.save(update_fields=["pii_verdict"])
        ledger_append(
            actor=actor,
            action="pii_scan.failed",
            subject=_version_subject(version),
            payload={"scan": scan.pk, "reason": reason[:500]},
        )
    scan.refresh_from_db()
    return scan


def pii_scans_reap(*, stale_queued_s: float | None = None) -> int:
    """Put back the scans whose worker was lost: running under an abandoned claim (see
    ``common.claims``), or queued for longer than ``stale_queued_s`` (default
    ``PII_SCAN_LEASE_S``: their message was lost with a worker that died holding it). Each is sent
    again through the outbox; a scan is idempotent, so one that was only slow is not recorded
    twice. Returns how many."""
    return _PII_SCAN_JOBS.reap(task="registry.pii_scan", queue="cpu", stale_queued_s=stale_queued_s, started_at=None)


def dataset_version_review(*, actor: Any, version: DatasetVersion, decision: str, note: str = "") -> DatasetVersion:
    """A data steward's judgement of a scan's findings: ``confirmed`` (personal data present, use
    allowed under the lawful basis), ``false_positive`` or ``anonymisation_required``."""
    require_project_role(actor, version.dataset.project, {Role.DATA_STEWARD}, "reviewing personal data")
    allowed = {Review.CONFIRMED, Review.FALSE_POSITIVE, Review.ANONYMISATION_REQUIRED}
    if decision not in allowed:
        raise DomainError(
            "invalid_input",
            f"decision must be one of {', '.join(sorted(allowed))}",
            fields={"decision": [f"got {decision!r}"]},
        )
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        if version.pii_verdict != PiiVerdict.FOUND:
            raise Conflict(
                "nothing_to_review", f"{version} has PII verdict {version.pii_verdict!r}: only found PII is reviewed"
            )
        version.review, version.reviewed_by, version.reviewed_at, version.review_note = (
            decision, actor, timezone.now(), note,
        )  # fmt: skip
        version.save(update_fields=["review", "reviewed_by", "reviewed_at", "review_note"])
        ledger_append(
            actor=actor, action="dataset_version.reviewed", subject=_version_subject(version),
            payload={"decision": decision, "note": note},
        )  # fmt: skip
    return version


def use_status(version: DatasetVersion) -> tuple[bool, str]:
    """May this version be used (for training)? With the reason when it may not."""
    if version.erased_at is not None:
        return False, f"erased ({version.erased_reason}); use the version that replaced it"
    if version.pii_verdict == PiiVerdict.PENDING:
        return False, "the PII scan has not finished"
    if version.pii_verdict == PiiVerdict.FAILED:
        return False, "the PII scan failed; request a new scan"
    if version.pii_verdict == PiiVerdict.NONE:
        return True, "no personal data found"
    if version.review == Review.UNREVIEWED:
        return False, "personal data was found and a data steward has not reviewed it"
    if version.review == Review.ANONYMISATION_REQUIRED:
        return False, "a data steward requires an anonymised version"
    return True, f"personal data reviewed: {version.review}"


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


def dataset_version_get(*, pk: int) -> DatasetVersion:
    version = DatasetVersion.objects.select_related("dataset__project").filter(pk=pk).first()
    if version is None:
        raise NotFound("not_found", f"no dataset version {pk}")
    return version


# --- Derived versions -----------------------------------------------------------------------------


def _refuse_erased(version: DatasetVersion) -> None:
    """Nothing is derived from an erased version: its bytes are gone, and the version that
    replaced it is the one to use."""
    if version.erased_at is not None:
        raise Conflict(
            "version_erased", f"{version} was erased ({version.erased_reason}); use the version that replaced it"
        )


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


def dataset_version_deduplicate(*, actor: Any, version: DatasetVersion) -> tuple[DatasetVersion, bool]:
    """A derived version without exact duplicates (by normalised-record hash), first copy kept,
    in the original format for JSONL and text (CSV keeps its header). Lineage points back."""
    from registry.records import READERS, record_key

    require_project_role(actor, version.dataset.project, WRITERS, "deduplicating a dataset version")
    _refuse_erased(version)
    if version.format not in ("jsonl", "text", "csv"):
        raise DomainError("unsupported_format", f"deduplication writes jsonl, text or csv, not {version.format}")
    if version.duplicate_count == 0:
        raise Conflict("no_duplicates", f"{version} holds no duplicate record")
    data = dataset_version_bytes(version)
    seen: set[str] = set()
    if version.format == "csv":
        # Rewritten from the parsed rows: a quoted field may span lines, so lines are not records.
        import csv
        import io

        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True)
        header = next(reader)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for record in READERS["csv"](data):
            key = record_key(record)
            if key not in seen:
                seen.add(key)
                writer.writerow([record.fields.get(name, "") for name in header])
        derived = out.getvalue().encode()
    else:
        # JSONL and text keep each first occurrence's line exactly as it was.
        lines = data.decode("utf-8-sig").splitlines(keepends=True)
        keep_lines: list[str] = []
        for record in READERS[version.format](data):
            key = record_key(record)
            if key not in seen:
                seen.add(key)
                keep_lines.append(lines[record.number - 1].rstrip("\r\n") + "\n")
        derived = "".join(keep_lines).encode()
    return _register_derived(
        actor=actor, version=version, data=derived, derivation="deduplicated",
        details={"removed": version.duplicate_count},
    )  # fmt: skip


def _register_derived(
    *,
    actor: Any,
    version: DatasetVersion,
    data: bytes,
    derivation: str,
    details: dict[str, Any],
    role_checked: bool = False,
) -> tuple[DatasetVersion, bool]:
    """Register ``data`` as a version derived from ``version``, with its lineage and ledger entry.
    ``role_checked``: the caller checked a role other than the uploaders' (an erasure)."""
    original = Path(version.original_name)
    name = f"{original.stem}.{derivation}{original.suffix}"
    store = _dataset_version_store if role_checked else dataset_version_upload
    with transaction.atomic():
        new, created = store(actor=actor, dataset=version.dataset, filename=name, data=data)
        if created:
            new.parent, new.derivation = version, derivation
            new.save(update_fields=["parent", "derivation"])
            ledger_append(
                actor=actor, action="dataset_version.derived", subject=_version_subject(new),
                payload={"from": version.pk, "derivation": derivation, **details},
            )  # fmt: skip
    return new, created


# --- Models and model versions -------------------------------------------------------------------


def weights_digest(files: dict[str, str]) -> str:
    """SHA-256 over the sorted ``<relative path> <file SHA-256>`` lines."""
    listing = "".join(f"{path} {digest}\n" for path, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def model_version_materialise(version: Any, folder: Path) -> Path:
    """Copy the version's files out of the artifact store into ``folder``, checking each against
    its digest and the whole against the weights digest; ``weights_mismatch`` if anything differs."""
    import shutil

    if weights_digest(version.files) != version.weights_digest:
        raise Conflict("weights_mismatch", f"model version {version.pk}: its file list no longer gives its digest")
    folder.mkdir(parents=True, exist_ok=True)
    for relative, digest in sorted(version.files.items()):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with artifacts.open_reader(digest) as src, target.open("wb") as dst:
                while chunk := src.read(artifacts.CHUNK):
                    dst.write(chunk)
        except artifacts.ArtifactCorrupt:
            shutil.rmtree(folder, ignore_errors=True)
            raise Conflict(
                "weights_mismatch", f"model version {version.pk}: {relative} no longer matches its digest {digest}"
            ) from None
        except artifacts.ArtifactMissing:
            raise Conflict("weights_mismatch", f"model version {version.pk}: {relative} is missing") from None
    return folder


def model_create(*, actor: Any, project: Project, slug: str, name: str, description: str = "") -> Any:
    from registry.models import Model

    require_project_role(actor, project, {Role.ML_ENGINEER}, "registering a model")
    with transaction.atomic():
        if Model.objects.filter(project=project, slug=slug).exists():
            raise Conflict("model_exists", f"project {project.slug} already has a model {slug!r}")
        model = Model(project=project, slug=slug, name=name, description=description, owner=actor)
        model.full_clean()
        model.save()
        ledger_append(
            actor=actor, action="model.created", subject=Subject("model", str(model.pk)), payload={"slug": slug}
        )
    return model


def model_version_register_folder(
    *,
    actor: Any,
    model: Any,
    folder: str,
    base: Any = None,
    dataset_versions: list[DatasetVersion] | None = None,
    allowed_roots: list[Path] | None = None,
    lineage: dict[str, Any] | None = None,
) -> tuple[Any, bool]:
    """Register the weights in ``folder`` (under ``REGISTRY_ALLOWED_ROOTS``, or ``allowed_roots``
    for the system's own outputs): every file becomes a blob; identical weights give the
    existing version back. ``lineage`` records how the service made them (run, code version).
    ``base`` and ``dataset_versions`` must belong to the model's project (400 ``invalid_input``)."""
    from registry.models import Model, ModelVersion

    require_project_role(actor, model.project, {Role.ML_ENGINEER}, "registering model weights")
    # Lineage stays inside the project: naming another project's data or weights would leak
    # that they exist and tie this model to subjects the actor may not govern.
    if base is not None and base.model.project_id != model.project_id:
        message = f"model version {base.pk} belongs to another project"
        raise DomainError("invalid_input", f"base: {message}", fields={"base": [message]})
    for dv in dataset_versions or []:
        if dv.dataset.project_id != model.project_id:
            message = f"dataset version {dv.pk} belongs to another project"
            raise DomainError("invalid_input", f"dataset_versions: {message}", fields={"dataset_versions": [message]})
    try:
        root = Path(folder).resolve()
    except (OSError, ValueError) as exc:
        raise _unreadable("folder", folder, exc) from None
    roots = allowed_roots if allowed_roots is not None else settings.REGISTRY_ALLOWED_ROOTS
    if not any(root.is_relative_to(r) for r in roots):
        raise DomainError("path_not_allowed", f"{folder} is outside the allowed roots (REGISTRY_ALLOWED_ROOTS)")
    try:
        if not root.is_dir():
            raise DomainError("path_not_found", f"{folder} is not a folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            if not path.resolve().is_relative_to(root):
                raise DomainError("path_not_allowed", f"{path} links outside {folder}")
    except OSError as exc:  # a name too long, a folder it may not enter
        raise _unreadable("folder", folder, exc) from None
    if not paths:
        raise DomainError("empty_folder", f"{folder} holds no file")
    files: dict[str, str] = {}
    size = 0
    for path in paths:
        digest, n = artifacts.put_chunks(_file_chunks(path, "folder"))
        files[path.relative_to(root).as_posix()] = digest
        size += n
    digest = weights_digest(files)
    with transaction.atomic():
        # One registration of a model at a time (its next number), and the dataset versions held
        # still while they are checked: an erasure committing meanwhile waits or is seen
        # (PostgreSQL row locks; SQLite's transactions are serial already).
        Model.objects.select_for_update().filter(pk=model.pk).values_list("pk", flat=True).first()
        locked = DatasetVersion.objects.select_for_update().filter(pk__in=[dv.pk for dv in dataset_versions or []])
        for dv in locked.order_by("pk"):
            allowed, reason = use_status(dv)
            if not allowed:
                raise DomainError("dataset_not_usable", f"{dv} may not be used: {reason}")
        existing = ModelVersion.objects.filter(model=model, weights_digest=digest).first()
        if existing is not None:
            return existing, False
        number = (model.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        version = ModelVersion.objects.create(
            model=model, number=number, weights_digest=digest, files=files, size_bytes=size, source=str(root),
            base=base, created_by=actor, lineage=lineage or {},
        )  # fmt: skip
        version.dataset_versions.set(dataset_versions or [])
        ledger_append(
            actor=actor,
            action="model_version.registered",
            subject=Subject("model_version", str(version.pk), digest),
            payload={
                "model": str(model), "number": number, "files": len(files), "size_bytes": size,
                "base": base.weights_digest if base else None,
                "dataset_versions": [dataset_version_digest(dv) for dv in dataset_versions or []],
                "lineage": lineage or {},
            },
        )  # fmt: skip
        dispatch_on_commit("registry.mlflow_mirror", args=(version.pk,), queue="cpu")
    return version, True


# --- Prompt templates ----------------------------------------------------------------------------


def prompt_template_register(
    *, actor: Any, project: Project, slug: str, body: Any, intended_use: str, kind: str = "template"
) -> tuple[Any, bool]:
    """A new version of a prompt template (``body`` a string) or chain (``body`` a list of steps);
    the same content again gives the existing version back."""
    from registry.models import PromptTemplate

    require_project_role(actor, project, {Role.ML_ENGINEER}, "registering a prompt template")
    if kind == "template" and not (isinstance(body, str) and body.strip()):
        raise DomainError("invalid_input", "a template's body is non-empty text", fields={"body": ["expected text"]})
    if kind == "chain" and not (
        isinstance(body, list) and body and all(isinstance(s, str) and s.strip() for s in body)
    ):
        raise DomainError(
            "invalid_input", "a chain's body is a list of step texts", fields={"body": ["expected a list"]}
        )
    if kind not in ("template", "chain"):
        raise DomainError("invalid_input", "kind is template or chain", fields={"kind": [f"got {kind!r}"]})
    if not intended_use.strip():
        raise DomainError("invalid_input", "state the intended use", fields={"intended_use": ["may not be blank"]})
    digest = canonical_digest({"kind": kind, "body": body})
    with transaction.atomic():
        existing = PromptTemplate.objects.filter(project=project, slug=slug, content_digest=digest).first()
        if existing is not None:
            return existing, False
        latest = PromptTemplate.objects.filter(project=project, slug=slug).order_by("-version").first()
        template = PromptTemplate.objects.create(
            project=project, slug=slug, version=(latest.version + 1) if latest else 1, kind=kind, body=body,
            content_digest=digest, intended_use=intended_use, owner=actor,
        )  # fmt: skip
        ledger_append(
            actor=actor, action="prompt_template.registered",
            subject=Subject("prompt_template", str(template.pk), digest),
            payload={"slug": slug, "version": template.version, "kind": kind, "intended_use": intended_use},
        )  # fmt: skip
    return template, True


# --- The MLflow mirror ---------------------------------------------------------------------------


def mlflow_model_name(model_version: Any) -> str:
    return f"{model_version.model.project.slug}.{model_version.model.slug}"


def model_version_mirror_to_mlflow(*, model_version_id: int, actor: Any) -> Any:
    """Mirror a model version into the MLflow model registry (a run holding its weights digest,
    a registered version, and the alias ``registry-v<number>``). Idempotent: a mirrored version
    is left alone. The ledger records the MLflow ids; MLflow holds no governance fact."""
    from mlflow import MlflowClient

    from registry.models import ModelVersion

    version = ModelVersion.objects.select_related("model__project").get(pk=model_version_id)
    if version.mlflow_version:
        return version
    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_REGISTRY_URI)
    experiment_name = f"governance/{version.model.project.slug}"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(experiment_name, artifact_location=settings.MLFLOW_ARTIFACT_LOCATION)
    )
    run_id = version.lineage.get("mlflow_run_id")  # a fine-tune's own run holds its parameters
    if not run_id:
        run_id = client.create_run(experiment_id, tags={"governance.model_version": str(version.pk)}).info.run_id
        client.log_param(run_id, "weights_digest", version.weights_digest)
        client.log_param(run_id, "files", len(version.files))
        client.set_terminated(run_id)
    name = mlflow_model_name(version)
    if not _registered(client, name):
        client.create_registered_model(name, tags={"governance.project": version.model.project.slug})
    registered = client.create_model_version(name, source=Path(version.source).as_uri(), run_id=run_id)
    alias = f"registry-v{version.number}"
    client.set_registered_model_alias(name, alias, registered.version)
    with transaction.atomic():
        version.mlflow_run_id, version.mlflow_model_name = run_id, name
        version.mlflow_version, version.mlflow_alias = str(registered.version), alias
        version.save(update_fields=["mlflow_run_id", "mlflow_model_name", "mlflow_version", "mlflow_alias"])
        ledger_append(
            actor=actor, action="model_version.mirrored_to_mlflow",
            subject=Subject("model_version", str(version.pk), version.weights_digest),
            payload={"run_id": run_id, "model": name, "version": str(registered.version), "alias": alias},
        )  # fmt: skip
    return version


def _registered(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


# --- Anonymised derived versions -----------------------------------------------------------------


def dataset_version_anonymise_request(*, actor: Any, version: DatasetVersion) -> None:
    """Ask for an anonymised derived version (a task builds it with Presidio's anonymizer)."""
    require_project_role(actor, version.dataset.project, {Role.DATA_STEWARD}, "anonymising a dataset version")
    _refuse_erased(version)
    if version.format not in ("jsonl", "csv", "text"):
        raise DomainError("unsupported_format", f"anonymisation writes jsonl, csv or text, not {version.format}")
    with transaction.atomic():
        ledger_append(actor=actor, action="dataset_version.anonymisation_requested", subject=_version_subject(version))
        dispatch_on_commit("registry.anonymise", args=(version.pk, str(actor.pk)), queue="cpu")


def _anonymisation_fail(*, actor: Any, version: DatasetVersion, reason: str) -> None:
    logger.error("anonymisation of dataset version %s failed: %s", version.pk, reason)
    with transaction.atomic():
        ledger_append(
            actor=actor, action="dataset_version.anonymisation_failed", subject=_version_subject(version),
            payload={"reason": reason[:500]},
        )  # fmt: skip


def _replace_strings(value: Any, path: str, replace: Any) -> Any:
    """Apply ``replace(path, text)`` to every scalar leaf, with the paths ``records._flatten`` uses."""
    if isinstance(value, dict):
        return {k: _replace_strings(v, f"{path}.{k}" if path else str(k), replace) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, f"{path}[{i}]", replace) for i, v in enumerate(value)]
    if isinstance(value, str) or (value is not None and not isinstance(value, bool)):
        text = value if isinstance(value, str) else str(value)
        new = replace(path or "value", text)
        return value if new == text else new
    return value


def dataset_version_anonymise_run(*, version_id: int, actor: Any) -> tuple[DatasetVersion, bool] | None:
    """Replace every finding with ``<ENTITY_TYPE>`` (Presidio's anonymizer), write the result in
    the version's format and register it as a derived version (which gets its own scan).

    A version erased since the request, or whose bytes are gone or changed, is not anonymised:
    the failure is recorded (``dataset_version.anonymisation_failed``) and None returned."""
    import csv
    import io
    import json

    from presidio_analyzer import RecognizerResult
    from presidio_anonymizer import AnonymizerEngine

    from registry import pii
    from registry.records import read_records

    version = DatasetVersion.objects.select_related("dataset__project").get(pk=version_id)
    try:
        _refuse_erased(version)
        data = dataset_version_bytes(version)
        records = list(read_records(data, version.format))
    except (DomainError, RecordError) as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, DomainError) else f"unreadable: {exc}"
        _anonymisation_fail(actor=actor, version=version, reason=reason)
        return None
    scanner = pii.configured_scanner()
    found = scanner.analyze_many(
        (text for r in records for text in r.fields.values()), processes=settings.PII_SCAN_PROCESSES
    )
    engine = AnonymizerEngine()

    def replace(_path: str, text: str) -> str:
        hits = found.get(text)
        if not hits:
            return text
        results = [RecognizerResult(h.entity, h.start, h.end, h.score) for h in hits]
        return engine.anonymize(text=text, analyzer_results=results).text

    if version.format == "jsonl":
        lines = [json.dumps(_replace_strings(json.loads(line), "", replace), ensure_ascii=False)
                 for line in data.decode("utf-8-sig").splitlines() if line.strip()]  # fmt: skip
        derived = ("\n".join(lines) + "\n").encode()
    elif version.format == "text":
        derived = "".join(replace("text", r.fields["text"]) + "\n" for r in records).encode()
    else:
        header = next(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for r in records:
            writer.writerow([replace(name, r.fields.get(name, "")) if r.fields.get(name) else "" for name in header])
        derived = out.getvalue().encode()
    try:
        return _register_derived(
            actor=actor, version=version, data=derived, derivation="anonymised", details={"texts_changed": len(found)}
        )
    except DomainError as exc:  # e.g. the same bytes were erased meanwhile: refused, on record
        _anonymisation_fail(actor=actor, version=version, reason=f"{exc.code}: {exc.message}")
        return None


# --- Erasure of a data subject's records ----------------------------------------------------------


def _blob_delete_unless_live(digest: str) -> bool:
    """Delete a dataset blob unless a version that is not erased still names it."""
    if DatasetVersion.objects.filter(sha256=digest, erased_at__isnull=True).exists():
        return False
    artifacts.blob_path(digest).unlink(missing_ok=True)
    return True


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
    a fresh PII scan), marks the old one erased and drops its subject-index entries; once it
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
