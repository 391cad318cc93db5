"""Versions derived from a dataset version: without its duplicates, or anonymised (Presidio's
anonymizer, in the worker). Each is registered like an upload, with its lineage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError
from common.tasks import dispatch_on_commit
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import DatasetVersion
from registry.records import RecordError
from registry.selectors import dataset_version_bytes
from registry.services.datasets import WRITERS, _dataset_version_store, _version_subject, dataset_version_upload

logger = logging.getLogger(__name__)


def _refuse_erased(version: DatasetVersion) -> None:
    """Nothing is derived from an erased version: its bytes are gone, and the version that
    replaced it is the one to use."""
    if version.erased_at is not None:
        raise Conflict(
            "version_erased", f"{version} was erased ({version.erased_reason}); use the version that replaced it"
        )


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


def dataset_version_anonymise_request(*, actor: Any, version: DatasetVersion) -> None:
    """Ask for an anonymised derived version (a task builds it with Presidio's anonymizer)."""
    require_project_role(actor, version.dataset.project, {Role.DATA_STEWARD}, "anonymising a dataset version")
    _refuse_erased(version)
    if version.format not in ("jsonl", "csv", "text"):
        raise DomainError("unsupported_format", f"anonymisation writes jsonl, csv or text, not {version.format}")
    with transaction.atomic():
        ledger_append(actor=actor, action="dataset_version.anonymisation_requested", subject=_version_subject(version))
        dispatch_on_commit("registry.anonymise", args=(version.pk, str(actor.pk)), queue=settings.PII_SCAN_QUEUE)


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
