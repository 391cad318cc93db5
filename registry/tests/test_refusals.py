"""Refusals on erased, unreadable or changed inputs: a clear 4xx that changes nothing, never a 500,
and work that fails in a task fails on record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from audits.ledger.models import Entry
from common import artifacts
from common.errors import Conflict, DomainError
from governance.services import api_token_create, approval_request_submit
from registry import tasks
from registry.models import Dataset, DatasetVersion, PiiScan, ScanStatus
from registry.services import (
    _blob_delete_unless_live,
    dataset_version_anonymise_request,
    dataset_version_anonymise_run,
    dataset_version_deduplicate,
    dataset_version_erase_records,
    dataset_version_register_path,
    dataset_version_upload,
    model_create,
    model_version_materialise,
    model_version_register_folder,
    pii_scan_run,
)

pytestmark = pytest.mark.django_db
# Bytes no other test stores: the artifact store is shared by the whole suite.
PERSONAL = b'{"text": "call Grace at +1 212-555-0147"}\n{"text": "refunds: 2 days"}\n{"text": "refunds: 2 days"}\n'


def _auth(user: Any) -> dict[str, str]:
    _, token = api_token_create(actor=user, user=user, name="t")
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


def _actions_since(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(b)) for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]


def _run_blob_deletions(callbacks: list[Any]) -> None:
    """Run what an erasure left for after commit that deletes blobs (not the scans it dispatched:
    their broker is no part of these tests)."""
    deletions = [c for c in callbacks if getattr(c, "func", None) is _blob_delete_unless_live]
    for deletion in deletions:
        deletion()


def _erase_record_1(people: dict[str, Any], version: Any, reason: str, capture: Any) -> None:
    with capture() as after_commit:
        dataset_version_erase_records(
            actor=people["compliance_officer"], version=version, record_numbers={1}, reason=reason
        )
    _run_blob_deletions(after_commit)


def _erased(people: dict[str, Any], dataset: Dataset, data: bytes, capture: Any) -> Any:
    """A version of ``data`` whose record 1 was erased (its blob deleted once the erasure committed)."""
    version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=data)
    _erase_record_1(people, version, "GDPR Art. 17 request 7", capture)
    version.refresh_from_db()
    assert version.erased_at is not None and not artifacts.blob_path(version.sha256).exists()
    return version


def test_erased_bytes_uploaded_again_are_refused_before_they_reach_the_store(
    people: dict[str, Any], dataset: Dataset, django_capture_on_commit_callbacks: Any
) -> None:
    erased = _erased(people, dataset, PERSONAL, django_capture_on_commit_callbacks)
    before = (Entry.objects.count(), DatasetVersion.objects.count())
    with django_capture_on_commit_callbacks() as after_commit, pytest.raises(Conflict) as caught:
        dataset_version_upload(actor=people["data_steward"], dataset=dataset, filename="again.jsonl", data=PERSONAL)
    _run_blob_deletions(after_commit)
    assert caught.value.code == "content_erased" and "GDPR Art. 17 request 7" in caught.value.message
    assert not artifacts.blob_path(erased.sha256).exists()  # the erased personal data stays gone
    assert (Entry.objects.count(), DatasetVersion.objects.count()) == before


def test_nothing_is_derived_from_an_erased_version(
    client: Client, people: dict[str, Any], dataset: Dataset, django_capture_on_commit_callbacks: Any
) -> None:
    erased = _erased(people, dataset, PERSONAL.replace(b"Grace", b"Alan"), django_capture_on_commit_callbacks)
    before = (Entry.objects.count(), DatasetVersion.objects.count())
    for refused in (
        lambda: dataset_version_deduplicate(actor=people["ml_engineer"], version=erased),
        lambda: dataset_version_anonymise_request(actor=people["data_steward"], version=erased),
    ):
        with pytest.raises(Conflict) as caught:
            refused()
        assert caught.value.code == "version_erased" and "use the version that replaced it" in caught.value.message
    for action, who in (("deduplicate", "ml_engineer"), ("anonymise", "data_steward")):
        answer = client.post(f"/api/v1/dataset-versions/{erased.pk}/{action}", **_auth(people[who]))
        assert answer.status_code == 409, answer.content
        assert answer.json()["error"]["code"] == "version_erased"
    assert DatasetVersion.objects.count() == before[1]
    assert Entry.objects.count() == before[0] + 2  # the two API tokens made above, nothing else


def test_an_anonymisation_whose_input_is_gone_fails_on_record(
    people: dict[str, Any], dataset: Dataset, django_capture_on_commit_callbacks: Any
) -> None:
    # Asked for before the erasure; the task runs after it.
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=PERSONAL.replace(b"Grace", b"Edsger")
    )
    dataset_version_anonymise_request(actor=people["data_steward"], version=version)
    _erase_record_1(people, version, "CCPA deletion", django_capture_on_commit_callbacks)
    start, versions = Entry.objects.count(), DatasetVersion.objects.count()
    assert tasks.anonymise(version.pk, str(people["data_steward"].pk)) is None
    [failed] = _actions_since(start)
    assert failed["action"] == "dataset_version.anonymisation_failed"
    assert failed["actor"]["name"] == "data-steward" and failed["subject"]["id"] == str(version.pk)
    assert failed["payload"]["reason"].startswith("version_erased: ")

    # A live version whose blob vanished from the store: the same, on record, never a crash.
    live, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=PERSONAL.replace(b"Grace", b"Barbara")
    )
    artifacts.blob_path(live.sha256).unlink()
    start = Entry.objects.count()
    assert dataset_version_anonymise_run(version_id=live.pk, actor=people["data_steward"]) is None
    [failed] = _actions_since(start)
    assert failed["action"] == "dataset_version.anonymisation_failed"
    missing = f"blob {live.sha256} is missing from the artifact store"
    assert failed["payload"]["reason"] == f"blob_missing: dataset version {live.pk}: {missing}"
    assert DatasetVersion.objects.count() == versions + 1


def test_unreadable_paths_under_an_allowed_root_are_bad_input(
    client: Client, people: dict[str, Any], dataset: Dataset, tmp_path: Path
) -> None:
    root = tmp_path / "imports"
    root.mkdir()
    too_long = root / ("n" * 300) / "t.jsonl"  # a component over NAME_MAX: the OS refuses the name
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="m", name="M")
    before = (Entry.objects.count(), DatasetVersion.objects.count())
    with override_settings(REGISTRY_ALLOWED_ROOTS=[root.resolve()]):
        with pytest.raises(DomainError) as caught:
            dataset_version_register_path(actor=people["ml_engineer"], dataset=dataset, path=str(too_long))
        assert (caught.value.code, caught.value.status_code) == ("invalid_input", 400)
        assert caught.value.message == f"{too_long} cannot be read: File name too long"
        assert caught.value.fields == {"path": ["File name too long"]}
        with pytest.raises(DomainError) as caught:
            model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(too_long.parent))
        assert (caught.value.code, caught.value.fields) == ("invalid_input", {"folder": ["File name too long"]})
        auth = _auth(people["ml_engineer"])
        answer = client.post(
            f"/api/v1/datasets/{dataset.pk}/versions/register-path", {"path": str(too_long)},
            content_type="application/json", **auth,
        )  # fmt: skip
        assert answer.status_code == 400, answer.content
        assert (
            answer.json()["error"]["code"] == "invalid_input"
            and "File name too long" in answer.json()["error"]["message"]
        )
    assert (Entry.objects.count(), DatasetVersion.objects.count()) == (before[0] + 1, before[1])  # + the token


@pytest.mark.parametrize("pk", ["\u00b2", "\u0661", "-1", str(2**63), str(2**64)])
def test_a_model_version_id_the_database_cannot_hold_is_not_found(people: dict[str, Any], pk: str) -> None:
    with pytest.raises(DomainError) as caught:
        approval_request_submit(
            actor=people["ml_engineer"], subject_type="model_version", subject_id=pk, action="model_version.deploy"
        )
    assert (caught.value.code, caught.value.status_code) == ("not_found", 404)


def _overwrite(digest: str, data: bytes) -> None:
    blob = artifacts.blob_path(digest)
    blob.chmod(0o644)
    blob.write_bytes(data)


def test_a_dataset_blob_changed_on_disk_is_never_read_as_the_version(people: dict[str, Any], dataset: Dataset) -> None:
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=PERSONAL.replace(b"Grace", b"Ada")
    )
    _overwrite(version.sha256, b'{"text": "other"}\n{"text": "other"}\n')
    scan = PiiScan.objects.get(version=version)
    assert pii_scan_run(scan_id=scan.pk, actor=people["system"]).status == ScanStatus.FAILED
    scan.refresh_from_db()
    assert f"ArtifactCorrupt: blob {version.sha256} is corrupt" in scan.error
    with pytest.raises(Conflict) as caught:
        dataset_version_deduplicate(actor=people["ml_engineer"], version=version)
    assert caught.value.code == "blob_corrupt" and version.sha256 in caught.value.message
    with pytest.raises(Conflict) as caught:
        dataset_version_erase_records(
            actor=people["compliance_officer"], version=version, record_numbers={1}, reason="GDPR Art. 17"
        )
    assert caught.value.code == "blob_corrupt"
    artifacts.blob_path(version.sha256).unlink()  # no later test may meet these bytes under that name


def test_weights_changed_on_disk_are_refused_and_not_left_behind(people: dict[str, Any], tmp_path: Path) -> None:
    weights = tmp_path / "imports" / "w"
    weights.mkdir(parents=True)
    (weights / "model.bin").write_bytes(b"weights of test_refusals " * 1000)
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="m", name="M")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        version, _ = model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(weights))
    good = model_version_materialise(version, tmp_path / "out-good")
    assert (good / "model.bin").read_bytes() == (weights / "model.bin").read_bytes()
    _overwrite(version.files["model.bin"], b"tampered")
    with pytest.raises(Conflict, match=r"model\.bin no longer matches its digest") as caught:
        model_version_materialise(version, tmp_path / "out")
    assert caught.value.code == "weights_mismatch" and not (tmp_path / "out").exists()
    artifacts.blob_path(version.files["model.bin"]).unlink()
