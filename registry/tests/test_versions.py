"""Dataset versions: content addressing, validation of uploads, ledger entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from audits.ledger.models import Entry
from common import artifacts
from common.errors import DomainError, PermissionDenied
from registry.models import Dataset, DatasetVersion, PiiScan, PiiVerdict, ScanStatus
from registry.services import (
    dataset_version_digest,
    dataset_version_register_path,
    dataset_version_upload,
    pii_scan_run,
    use_status,
)

pytestmark = pytest.mark.django_db
JSONL = b'{"text": "hello there"}\n{"text": "general kenobi"}\n{"text": "hello there"}\n'


def _entries_since(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(b)) for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]


def test_identical_bytes_give_the_same_version_and_one_blob(people: dict[str, Any], dataset: Dataset) -> None:
    first, created = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=JSONL
    )
    again, created_again = dataset_version_upload(
        actor=people["data_steward"], dataset=dataset, filename="copy.jsonl", data=JSONL
    )
    assert created and not created_again and again.pk == first.pk
    assert first.sha256 == artifacts.put_bytes(JSONL)[0]
    assert (first.record_count, first.duplicate_count) == (3, 1)
    blobs = [p for p in (Path(settings.ARTIFACT_ROOT) / "sha256").rglob("*") if p.is_file()]
    assert [p.name for p in blobs].count(first.sha256[2:]) == 1
    changed, created = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=JSONL.replace(b"kenobi", b"kenobj")
    )
    assert created and changed.number == 2 and changed.sha256 != first.sha256
    assert DatasetVersion.objects.filter(dataset=dataset).count() == 2


def test_every_registry_write_is_in_the_ledger_with_actor_and_digest(people: dict[str, Any]) -> None:
    start = Entry.objects.count()
    from registry.tests.conftest import make_dataset

    dataset = make_dataset(people, slug="other")
    version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=JSONL)
    entries = _entries_since(start)
    assert [(e["action"], e["actor"]["name"]) for e in entries] == [
        ("dataset.created", "data-steward"),
        ("dataset_version.registered", "ml-engineer"),
        ("pii_scan.requested", "ml-engineer"),
    ]
    registered = entries[1]
    assert registered["subject"] == {
        "type": "dataset_version",
        "id": str(version.pk),
        "digest": dataset_version_digest(version),
    }
    assert registered["payload"]["content_sha256"] == version.sha256


def test_a_vanished_blob_fails_the_scan_visibly(people: dict[str, Any], dataset: Dataset) -> None:
    version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=JSONL)
    artifacts.blob_path(version.sha256).unlink()
    scan = PiiScan.objects.get(version=version)
    start = Entry.objects.count()
    result = pii_scan_run(scan_id=scan.pk, actor=people["system"])
    assert result is not None and result.status == ScanStatus.FAILED
    assert "missing from the artifact store" in result.error
    version.refresh_from_db()
    assert version.pii_verdict == PiiVerdict.FAILED
    assert use_status(version) == (False, "the PII scan failed; request a new scan")
    assert [e["action"] for e in _entries_since(start)] == ["pii_scan.failed"]
    assert pii_scan_run(scan_id=scan.pk, actor=people["system"]) is None  # claimed once, never twice


@pytest.mark.parametrize(
    ("filename", "data", "code", "fragment"),
    [
        ("t.jsonl", b"", "empty_file", "the file is empty"),
        ("t.jsonl", b"\n\n", "invalid_file", "holds no record"),
        ("t.jsonl", b'{"text": "ok"}\n{"text": broken}\n', "invalid_file", "line 2: not JSON"),
        ("t.jsonl", b'{"text": "ok"}\n[1, 2]\n', "invalid_file", "line 2: a JSONL record must be a JSON object"),
        ("t.csv", b'id,text\n1,"fine"\n2,"unterminated\n', "invalid_file", "line 3: malformed CSV"),
        ("t.csv", b"id,text\n1,fine\n2,too,many\n", "invalid_file", "line 3: 3 fields where the header has 2"),
        ("t.exe", b"MZ...", "invalid_file", "unsupported file type '.exe'"),
        ("t.txt", b"\xff\xfe bad", "invalid_file", "line 1: not valid UTF-8"),
        ("t.parquet", b"not parquet", "invalid_file", "not a readable Parquet file"),
    ],
)
def test_bad_files_are_refused_and_change_nothing(
    people: dict[str, Any], dataset: Dataset, filename: str, data: bytes, code: str, fragment: str
) -> None:
    before = (Entry.objects.count(), DatasetVersion.objects.count())
    with pytest.raises(DomainError) as caught:
        dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename=filename, data=data)
    assert caught.value.code == code
    assert fragment in caught.value.message
    assert (Entry.objects.count(), DatasetVersion.objects.count()) == before
    assert not (Path(settings.ARTIFACT_ROOT) / "sha256").exists() or not any(
        p.is_file() and p.read_bytes() == data for p in (Path(settings.ARTIFACT_ROOT) / "sha256").rglob("*")
    )


def test_size_limit_and_allowed_roots(people: dict[str, Any], dataset: Dataset, tmp_path: Path) -> None:
    with override_settings(REGISTRY_MAX_UPLOAD_BYTES=10), pytest.raises(DomainError) as caught:
        dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=JSONL)
    assert caught.value.code == "file_too_large" and caught.value.status_code == 413

    allowed, outside = tmp_path / "imports", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "ok.jsonl").write_bytes(JSONL)
    (outside / "secret.jsonl").write_bytes(JSONL)
    (allowed / "escape.jsonl").symlink_to(outside / "secret.jsonl")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[allowed.resolve()]):
        for path in (outside / "secret.jsonl", allowed / "escape.jsonl", allowed / ".." / "elsewhere" / "secret.jsonl"):
            with pytest.raises(DomainError) as caught:
                dataset_version_register_path(actor=people["ml_engineer"], dataset=dataset, path=str(path))
            assert caught.value.code == "path_not_allowed"
        assert DatasetVersion.objects.count() == 0
        version, created = dataset_version_register_path(
            actor=people["ml_engineer"], dataset=dataset, path=str(allowed / "ok.jsonl")
        )
        assert created and version.original_name == "ok.jsonl"


def test_roles_are_enforced(people: dict[str, Any], dataset: Dataset) -> None:
    with pytest.raises(PermissionDenied, match="ml_engineer"):
        dataset_version_upload(actor=people["auditor"], dataset=dataset, filename="t.jsonl", data=JSONL)
    assert DatasetVersion.objects.count() == 0
