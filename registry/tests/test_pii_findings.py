"""A steward's work on single findings (registry.services.pii_findings): the record behind a
finding, read from the stored bytes and recorded as viewed; marks on findings and the review rule
they feed. Each service's ledger entries are asserted; refusals write none."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from common.errors import Conflict, DomainError, PermissionDenied
from registry.models import DatasetVersion, FindingState, PiiScan, Review
from registry.rules import scan_findings
from registry.services import (
    dataset_version_erase_records,
    dataset_version_review,
    dataset_version_upload,
    pii_finding_mark,
    pii_finding_view,
    pii_scan_request,
    pii_scan_run,
)
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db

PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
CSV = b"ticket,contact,body\n1,ana@example.org,late parcel\n2,-,write to bo@example.org or ana@example.org\n"


def _scan(version: DatasetVersion, people: dict[str, Any]) -> PiiScan:
    scan = PiiScan.objects.filter(version=version).order_by("-requested_at").first()
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=scan.pk, actor=people["system"])
    scan.refresh_from_db()
    return scan


def _version(people: dict[str, Any]) -> tuple[DatasetVersion, PiiScan]:
    version, _ = dataset_version_upload(
        actor=people["data_steward"], dataset=make_dataset(people), filename="tickets.csv", data=CSV
    )
    return version, _scan(version, people)


def _entries(since: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=since).order_by("index")]


def test_findings_are_numbered_by_type_then_as_kept_with_their_scores(people: dict[str, Any]) -> None:
    _, scan = _version(people)
    listed = scan_findings(scan.findings)
    assert [(f.number, f.entity, f.record, f.field, f.start, f.end) for f in listed] == [
        (1, "EMAIL_ADDRESS", 1, "contact", 0, 15),
        (2, "EMAIL_ADDRESS", 2, "body", 9, 23),
        (3, "EMAIL_ADDRESS", 2, "body", 27, 42),
    ]
    assert all(f.score == 1.0 for f in listed)


def test_a_view_reads_the_stored_record_and_ledgers_who_looked_at_what(people: dict[str, Any]) -> None:
    _, scan = _version(people)
    start = Entry.objects.count()
    preview = pii_finding_view(actor=people["data_steward"], scan=scan, number=3)
    assert (preview.before, preview.flagged, preview.after) == ("write to bo@example.org or ", "ana@example.org", "")
    assert preview.fields == [("ticket", "2"), ("contact", "-"), ("body", "write to bo@example.org or ana@example.org")]
    (entry,) = _entries(start)
    assert preview.ledger_index == start
    assert entry["action"] == "pii_finding.viewed" and entry["actor"]["name"] == people["data_steward"].username
    assert entry["payload"] == {"scan": scan.pk, "finding": 3, "entity": "EMAIL_ADDRESS", "record": 2,
                                "start": 27, "end": 42}  # fmt: skip
    assert b"example.org" not in bytes(Entry.objects.get(index=start).body)


def test_a_view_is_refused_to_other_roles_and_for_erased_or_unscanned_versions(people: dict[str, Any]) -> None:
    version, scan = _version(people)
    start = Entry.objects.count()
    for role in ("ml_engineer", "compliance_officer", "auditor"):
        with pytest.raises(PermissionDenied, match="viewing a flagged record needs the data_steward role"):
            pii_finding_view(actor=people[role], scan=scan, number=1)
    with pytest.raises(DomainError, match="there is no finding 4"):
        pii_finding_view(actor=people["data_steward"], scan=scan, number=4)
    assert Entry.objects.count() == start
    rescan = pii_scan_request(actor=people["data_steward"], version=version)
    with pytest.raises(Conflict, match=f"scan {rescan.pk} is queued: it has no findings to show"):
        pii_finding_view(actor=people["data_steward"], scan=rescan, number=1)
    dataset_version_erase_records(
        actor=people["compliance_officer"], version=version, record_numbers={2}, reason="request DSR-1"
    )
    start = Entry.objects.count()
    with pytest.raises(Conflict, match=r"was erased \(request DSR-1\); its records are gone"):
        pii_finding_view(actor=people["data_steward"], scan=scan, number=1)
    assert Entry.objects.count() == start


def test_marks_are_ledgered_and_only_on_the_latest_scan(people: dict[str, Any]) -> None:
    version, scan = _version(people)
    steward = people["data_steward"]
    start = Entry.objects.count()
    mark, changed = pii_finding_mark(actor=steward, scan=scan, number=2, state=FindingState.FALSE_POSITIVE)
    assert changed and (mark.finding, mark.state, mark.marked_by) == (2, "false_positive", steward)
    assert pii_finding_mark(actor=steward, scan=scan, number=2, state=FindingState.FALSE_POSITIVE)[1] is False
    mark, changed = pii_finding_mark(actor=steward, scan=scan, number=2, state=FindingState.PERSONAL_DATA)
    assert changed and mark.state == "personal_data"
    assert [(e["action"], e["payload"]["state"], e["payload"]["previous_state"]) for e in _entries(start)] == [
        ("pii_finding.marked", "false_positive", None),
        ("pii_finding.marked", "personal_data", "false_positive"),
    ]
    with pytest.raises(DomainError, match="state must be one of false_positive, personal_data"):
        pii_finding_mark(actor=steward, scan=scan, number=1, state="maybe")
    with pytest.raises(PermissionDenied):
        pii_finding_mark(actor=people["ml_engineer"], scan=scan, number=1, state=FindingState.FALSE_POSITIVE)
    pii_scan_request(actor=steward, version=version)
    newer = _scan(version, people)
    start = Entry.objects.count()
    with pytest.raises(Conflict, match=f"scan {scan.pk} is not the latest completed scan .* scan {newer.pk}"):
        pii_finding_mark(actor=steward, scan=scan, number=1, state=FindingState.FALSE_POSITIVE)
    assert Entry.objects.count() == start


def test_a_false_positive_review_may_not_contradict_a_personal_data_mark(people: dict[str, Any]) -> None:
    version, scan = _version(people)
    steward = people["data_steward"]
    pii_finding_mark(actor=steward, scan=scan, number=1, state=FindingState.PERSONAL_DATA)
    pii_finding_mark(actor=steward, scan=scan, number=3, state=FindingState.PERSONAL_DATA)
    start = Entry.objects.count()
    with pytest.raises(Conflict, match=f"finding\\(s\\) 1, 3 of scan {scan.pk} are marked personal data"):
        dataset_version_review(actor=steward, version=version, decision=Review.FALSE_POSITIVE)
    assert Entry.objects.count() == start
    assert DatasetVersion.objects.get(pk=version.pk).review == Review.UNREVIEWED
    reviewed = dataset_version_review(actor=steward, version=version, decision=Review.CONFIRMED, note="needed")
    assert reviewed.review == Review.CONFIRMED
    assert [e["action"] for e in _entries(start)] == ["dataset_version.reviewed"]
