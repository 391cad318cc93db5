"""Proved through the services users call: a text with two
findings no longer crashes its scan, an unexpected error ends a scan ``failed`` on record, a
model version cannot name another project's data or weights, and a rescan whose findings differ
resets the steward's review so that earlier approvals stop counting."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from audits.ledger.models import Entry
from common.errors import DomainError
from governance.roles import Role
from governance.services import (
    approval_holds,
    approval_request_decide,
    approval_request_submit,
    project_create,
    project_role_grant,
)
from registry import pii
from registry.models import DatasetVersion, ModelVersion, PiiScan, Review, ScanStatus
from registry.services import (
    dataset_create,
    dataset_version_digest,
    dataset_version_review,
    dataset_version_upload,
    model_create,
    model_version_register_folder,
    pii_scan_request,
    pii_scan_run,
    use_status,
)
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db
EMAIL_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
EMAIL_PHONE = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "PII_SCAN_PROCESSES": 1}


def _upload(people: dict[str, Any], records: list[dict[str, str]], slug: str = "tickets") -> DatasetVersion:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=make_dataset(people, slug=slug), filename="t.jsonl", data=data
    )
    return version


def _run_queued_scans(people: dict[str, Any], version: DatasetVersion, cfg: dict[str, Any]) -> PiiScan:
    with override_settings(**cfg):
        for scan in PiiScan.objects.filter(version=version, status=ScanStatus.QUEUED):
            pii_scan_run(scan_id=scan.pk, actor=people["system"])
    version.refresh_from_db()
    return PiiScan.objects.filter(version=version).order_by("-requested_at", "-pk").first()


def _payload(subject_id: Any, action: str) -> dict[str, Any]:
    entry = Entry.objects.filter(subject_type="dataset_version", subject_id=str(subject_id), action=action).last()
    assert entry is not None, f"no {action} entry"
    return json.loads(bytes(entry.body))["payload"]


def _approve_for_training(people: dict[str, Any], version: DatasetVersion) -> None:
    request = approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")


def _approved(version: DatasetVersion) -> bool:
    return approval_holds(
        subject_type="dataset_version", subject_id=str(version.pk), action="dataset_version.use_for_training",
        digest=dataset_version_digest(version),
    )  # fmt: skip


# --- 1. Two findings in one text; unexpected errors ------------------------------------------------


def test_two_findings_in_one_text_end_the_scan_succeeded(people: dict[str, Any]) -> None:
    """``Hit`` has no ordering: sorting two of them raised TypeError and the scan stayed running."""
    tag = uuid.uuid4().hex[:6]
    version = _upload(people, [{"text": f"a{tag}@example.com and b{tag}@example.com"}])
    scan = _run_queued_scans(people, version, EMAIL_ONLY)
    assert scan.status == ScanStatus.SUCCEEDED
    assert version.pii_verdict == "found"
    assert scan.findings["EMAIL_ADDRESS"]["count"] == 2
    assert [s["start"] for s in scan.findings["EMAIL_ADDRESS"]["samples"]] == [0, len(f"a{tag}@example.com and ")]
    assert _payload(version.pk, "pii_scan.succeeded")["counts"] == {"EMAIL_ADDRESS": 2}


def test_an_unexpected_error_fails_the_scan_on_record(
    people: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The scanner (a dependency of ``pii_scan_run``, not the thing under test) is replaced by one
    that breaks the way a bug would."""
    secret = f"only-in-the-record-{uuid.uuid4().hex}"

    class BrokenScanner:
        def scan_iter(self, texts: Any, processes: int = 1) -> Any:
            list(texts)
            raise RuntimeError("recognizer exploded")
            yield  # a generator, as the engine's is

    monkeypatch.setattr(pii, "configured_scanner", lambda: BrokenScanner())
    version = _upload(people, [{"text": secret}])
    scan = _run_queued_scans(people, version, EMAIL_ONLY)
    assert scan.status == ScanStatus.FAILED and scan.finished_at is not None
    assert "RuntimeError: recognizer exploded" in scan.error and secret not in scan.error
    assert version.pii_verdict == "failed"
    payload = _payload(version.pk, "pii_scan.failed")
    assert payload["scan"] == scan.pk and "RuntimeError: recognizer exploded" in payload["reason"]
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)  # the traceback is logged
    # Ended on record: the reaper has nothing to send again.
    assert pii_scan_run(scan_id=scan.pk, actor=people["system"]) is None


# --- 2. Lineage stays within the project ----------------------------------------------------------


@pytest.fixture
def other_project(people: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Another project, with a scanned dataset version and a model version of its own; the first
    project's ML engineer may read it (auditor) but not govern it."""
    users = get_user_model().objects
    other = project_create(actor=people["system"], slug="other", name="Other")
    owner = users.create_user(username="other-owner")
    for role in (Role.ML_ENGINEER, Role.DATA_STEWARD):
        project_role_grant(actor=people["system"], project=other, user=owner, role=role, reason="setup")
    owner = users.get(pk=owner.pk)
    project_role_grant(actor=people["system"], project=other, user=people["ml_engineer"], role=Role.AUDITOR, reason="x")
    dataset = dataset_create(
        actor=owner, project=other, slug="secret", name="Secret", purpose="their own work",
        lawful_basis="legitimate_interests", retention_days=30, source="their export", data_steward=owner,
        data_subject_categories=["customers"], personal_data_categories=["contact details"],
    )  # fmt: skip
    data = (json.dumps({"text": f"b {uuid.uuid4().hex}"}) + "\n").encode()
    version, _ = dataset_version_upload(actor=owner, dataset=dataset, filename="b.jsonl", data=data)
    _run_queued_scans(people, version, EMAIL_ONLY)
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(uuid.uuid4().bytes)
    model = model_create(actor=owner, project=other, slug="theirs", name="Theirs")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[tmp_path.resolve()]):
        model_version, _ = model_version_register_folder(actor=owner, model=model, folder=str(folder))
    version.refresh_from_db()
    assert use_status(version)[0]
    return {"dataset_version": version, "model_version": model_version}


@pytest.mark.parametrize("field", ["dataset_versions", "base"])
def test_a_model_version_naming_another_projects_data_or_weights_is_refused(
    people: dict[str, Any], other_project: dict[str, Any], tmp_path: Path, field: str
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(uuid.uuid4().bytes)
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="m", name="M")
    arguments: dict[str, Any] = (
        {"dataset_versions": [other_project["dataset_version"]]}
        if field == "dataset_versions"
        else {"base": other_project["model_version"]}
    )
    versions_before, entries_before = ModelVersion.objects.count(), Entry.objects.count()
    with override_settings(REGISTRY_ALLOWED_ROOTS=[tmp_path.resolve()]):
        with pytest.raises(DomainError) as caught:
            model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(folder), **arguments)
    assert caught.value.code == "invalid_input" and caught.value.status_code == 400
    assert list(caught.value.fields) == [field] and "belongs to another project" in caught.value.message
    assert ModelVersion.objects.count() == versions_before and Entry.objects.count() == entries_before


# --- 3. A rescan with other findings resets the review --------------------------------------------


def test_a_rescan_with_other_findings_resets_the_review_and_voids_approvals(people: dict[str, Any]) -> None:
    version = _upload(people, [{"text": f"mail x{uuid.uuid4().hex[:6]}@example.com", "note": "call +1 212-555-0147"}])
    _run_queued_scans(people, version, EMAIL_ONLY)
    assert version.pii_verdict == "found"
    dataset_version_review(actor=people["data_steward"], version=version, decision="false_positive", note="test mail")
    version.refresh_from_db()
    _approve_for_training(people, version)
    assert use_status(version)[0] and _approved(version)
    digest_before = dataset_version_digest(version)

    pii_scan_request(actor=people["ml_engineer"], version=version)
    scan = _run_queued_scans(people, version, EMAIL_PHONE)  # a new recognizer finds the phone number
    assert set(scan.findings) == {"EMAIL_ADDRESS", "PHONE_NUMBER"}
    assert version.review == Review.UNREVIEWED
    assert version.reviewed_by is None and version.reviewed_at is None
    assert dataset_version_digest(version) != digest_before
    assert not use_status(version)[0] and not _approved(version)
    payload = _payload(version.pk, "pii_scan.succeeded")
    assert payload["scan"] == scan.pk and payload["counts"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert payload["review_reset"]["previous_review"] == "false_positive"
    assert payload["review_reset"]["previous_counts"] == {"EMAIL_ADDRESS": 1}
    entry = Entry.objects.filter(subject_type="dataset_version", action="pii_scan.succeeded").last()
    assert json.loads(bytes(entry.body))["subject"]["digest"] == dataset_version_digest(version)


def test_a_rescan_with_the_same_findings_keeps_the_review(people: dict[str, Any]) -> None:
    """The reset is for new findings only (this passed before the fix too: a guard, not a probe)."""
    version = _upload(people, [{"text": f"mail y{uuid.uuid4().hex[:6]}@example.com"}])
    _run_queued_scans(people, version, EMAIL_ONLY)
    dataset_version_review(actor=people["data_steward"], version=version, decision="false_positive", note="test")
    version.refresh_from_db()
    _approve_for_training(people, version)
    digest_before = dataset_version_digest(version)
    assert _approved(version)
    pii_scan_request(actor=people["ml_engineer"], version=version)
    _run_queued_scans(people, version, EMAIL_ONLY)
    assert version.review == Review.FALSE_POSITIVE and version.reviewed_by == people["data_steward"]
    assert dataset_version_digest(version) == digest_before and _approved(version)
    assert _payload(version.pk, "pii_scan.succeeded")["review_reset"] is None
