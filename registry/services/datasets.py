"""Datasets and their versions: registration (an upload, or a file already on the server), the
storage of a version's bytes, and the PII scan every new version gets."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from audits.ledger.services import Subject, ledger_append
from common import artifacts
from common.errors import Conflict, DomainError
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import Dataset, DatasetVersion, LawfulBasis, PiiScan
from registry.records import RecordError, format_of, quality_of
from registry.rules import dataset_version_digest

WRITERS = {Role.DATA_STEWARD, Role.ML_ENGINEER}


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
    dispatch_on_commit("registry.pii_scan", args=(scan.pk,), queue=settings.PII_SCAN_QUEUE)
    return scan


def _blob_delete_unless_live(digest: str) -> bool:
    """Delete a dataset blob unless a version that is not erased still names it."""
    if DatasetVersion.objects.filter(sha256=digest, erased_at__isnull=True).exists():
        return False
    artifacts.blob_path(digest).unlink(missing_ok=True)
    return True
