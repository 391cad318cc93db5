"""A project's PII lists applied to findings (``registry.pii_lists``), the steward's false-positive
mark that feeds the allow-list, and the benchmark's precision and recall (``bench.pii_quality``)
on a labelled set whose answer is known by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from bench.pii_corpus import LabelledRecord, Span
from bench.pii_quality import judge, score, steward_rules, targets_met
from common.errors import Conflict, DomainError
from governance.models import PiiListEntry
from governance.services import allow_value_hash, pii_list_entry_add, pii_rule_validate
from registry.models import DatasetVersion, FindingState, PiiScan
from registry.pii import Hit
from registry.pii_lists import for_project, from_rules
from registry.services import dataset_version_erase_records, dataset_version_upload, pii_finding_mark, pii_scan_run
from registry.tests.conftest import make_dataset

KEY = "test-key"
TEXT = "Billing team: call Ana on +44 20 7946 0018 about CUST-123456, trace 9f8e7d6c5b4a."


def _hit(entity: str, value: str, score: float = 0.85) -> Hit:
    start = TEXT.index(value)
    return Hit(entity, start, start + len(value), score)


def _rules(*specs: tuple[str, str, str, str]) -> list[Any]:
    return [pii_rule_validate(kind=k, match=m, text=t, entity=e, secret=KEY) for k, m, t, e in specs]


def test_apply_drops_allowed_values_and_patterns_for_their_type_only() -> None:
    hits = [_hit("LOCATION", "Billing"), _hit("PERSON", "Billing"), _hit("PERSON", "Ana"),
            _hit("PHONE_NUMBER", "+44 20 7946 0018", 0.75), _hit("PERSON", "9f8e7d6c5b4a")]  # fmt: skip
    lists = from_rules(
        _rules(("allow", "value", "billing", "LOCATION"), ("allow", "pattern", "[0-9a-f]{8,16}", "")), secret=KEY
    )
    assert lists.apply(TEXT, hits) == [_hit("PERSON", "Billing"), _hit("PERSON", "Ana"), hits[3]]
    # A pattern allows a whole value, not a text that holds one.
    assert lists.allowed("PERSON", "9f8e7d6c5b4a") and not lists.allowed("PERSON", "trace 9f8e7d6c5b4a")
    # Another key's hash allows nothing: the list is bound to the deployment's key.
    assert from_rules(lists.rules, secret="another key").apply(TEXT, hits[:1]) == hits[:1]
    assert from_rules([], secret=KEY).apply(TEXT, hits) == hits


def test_apply_adds_deny_findings_with_presidio_and_describe_counts_them() -> None:
    rules = _rules(("deny", "pattern", r"CUST-\d{6}", "CUSTOMER_CODE"), ("deny", "term", "ana", "PERSON"),
                   ("allow", "value", "Ana", "PERSON"))  # fmt: skip
    lists = from_rules(rules, secret=KEY)
    ana = _hit("PERSON", "Ana", 0.85)
    found = lists.apply(TEXT, [ana])
    # The allowed finding goes; the deny term reports it again (deny wins), once; the code is found.
    assert found == [_hit("PERSON", "Ana", 1.0), _hit("CUSTOMER_CODE", "CUST-123456", 1.0)]
    described = lists.describe()
    assert {k: v for k, v in described.items() if k != "digest"} == {
        "allow_values": 1, "allow_patterns": 0, "deny_terms": 1, "deny_patterns": 1
    }  # fmt: skip
    assert described["digest"].startswith("sha256:") and allow_value_hash("Ana", KEY) not in described["digest"]
    assert from_rules(rules[:2], secret=KEY).describe()["digest"] != described["digest"]


def test_precision_and_recall_on_a_set_known_by_hand() -> None:
    text = "Budi Santoso lives in Medan, phone 0812 3456 7890. Billing #123456."
    record = LabelledRecord(text, [Span("PERSON", 0, 12), Span("LOCATION", 22, 27), Span("PHONE_NUMBER", 35, 49)])
    hits = [
        Hit("PERSON", 0, 4, 0.85),  # overlaps the name: right
        Hit("PERSON", 22, 27, 0.85),  # Medan as a person: wrong type, so a false positive
        Hit("PHONE_NUMBER", 35, 49, 0.4),  # right
        Hit("LOCATION", 51, 58, 0.85),  # "Billing": a false positive
        Hit("PHONE_NUMBER", 60, 66, 0.4),  # the order number: a false positive
    ]
    assert judge(record, hits) == ([True, False, True, False, False], [True, False, True])
    clean = LabelledRecord("Nothing here.", [])
    figures = score([record, clean], [hits, []])
    assert figures["PERSON"] == {"findings": 2, "true_positives": 1, "false_positives": 1, "labelled": 1,
                                      "missed": 0, "precision": 0.5, "recall": 1.0}  # fmt: skip
    assert (figures["LOCATION"]["precision"], figures["LOCATION"]["recall"]) == (0.0, 0.0)
    assert (figures["PHONE_NUMBER"]["precision"], figures["PHONE_NUMBER"]["recall"]) == (0.5, 1.0)
    assert (figures["ALL"]["precision"], figures["ALL"]["recall"]) == (0.4, round(2 / 3, 4))
    assert targets_met(figures) == {"PERSON": False, "LOCATION": False, "PHONE_NUMBER": False}
    # The steward marks the three false positives: each value's hash for its type (the order
    # number's pattern needs two false positives to be adopted), and the place found as a person
    # also becomes a deny term of its own type; the lists then remove exactly the three and find Medan.
    rules = steward_rules([record], [hits], KEY)
    assert [(r.kind, r.match, r.entity, r.pattern) for r in rules] == [
        ("allow", "value", "PERSON", ""), ("allow", "value", "LOCATION", ""), ("allow", "value", "PHONE_NUMBER", ""),
        ("deny", "term", "LOCATION", "Medan"),
    ]  # fmt: skip
    after = from_rules(rules, secret=KEY).apply(text, hits)
    assert after == [hits[0], Hit("LOCATION", 22, 27, 1.0), hits[2]]
    assert (score([record], [after])["ALL"]["precision"], score([record], [after])["ALL"]["recall"]) == (1.0, 1.0)


PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
CSV = b"ticket,contact,body\n1,noreply@example.org,late parcel\n2,-,write to bo@example.org\n"


def _scanned(people: dict[str, Any]) -> tuple[DatasetVersion, PiiScan]:
    version, _ = dataset_version_upload(
        actor=people["data_steward"], dataset=make_dataset(people), filename="tickets.csv", data=CSV
    )
    scan = PiiScan.objects.filter(version=version).order_by("-requested_at").first()
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=scan.pk, actor=people["system"])
    scan.refresh_from_db()
    return version, scan


def _bodies(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=start).order_by("index")]


@pytest.mark.django_db
def test_a_false_positive_mark_adds_the_value_hash_or_a_pattern_ledgered(people: dict[str, Any]) -> None:
    steward, project = people["data_steward"], people["project"]
    version, scan = _scanned(people)
    start = Entry.objects.count()
    mark, changed = pii_finding_mark(actor=steward, scan=scan, number=1, state="false_positive", allow="value")
    assert changed and mark.state == FindingState.FALSE_POSITIVE
    marked, added = _bodies(start)
    assert (marked["action"], added["action"]) == ("pii_finding.marked", "pii_list.entry_added")
    (entry,) = PiiListEntry.objects.filter(project=project)
    assert (entry.kind, entry.match, entry.entity) == ("allow", "value", "EMAIL_ADDRESS")
    assert entry.value_hash == allow_value_hash("noreply@example.org") and entry.ledger_index == start + 1
    assert added["payload"]["source"] == {"scan": scan.pk, "finding": 1, "dataset_version": version.pk}
    assert all(b"noreply" not in bytes(e.body) for e in Entry.objects.filter(index__gte=start))
    lists = for_project(project)
    assert lists.apply("to noreply@example.org", [Hit("EMAIL_ADDRESS", 3, 22, 1.0)]) == []

    # Same state again with a pattern: the mark stays, the list grows; a pattern that does not
    # match the finding's value, or an allow on a personal-data mark, changes nothing.
    start = Entry.objects.count()
    with pytest.raises(DomainError, match="does not match the whole value of finding 2") as refused:
        pii_finding_mark(actor=steward, scan=scan, number=2, state="false_positive", allow="pattern",
                         allow_pattern=r"noreply@\S+")  # fmt: skip
    assert refused.value.fields == {"allow_pattern": ["does not match the finding's value"]}
    with pytest.raises(DomainError, match="only a finding marked false_positive goes on the allow-list"):
        pii_finding_mark(actor=steward, scan=scan, number=2, state="personal_data", allow="value")
    with pytest.raises(DomainError, match="allow_pattern: not a regular expression"):
        pii_finding_mark(actor=steward, scan=scan, number=2, state="false_positive", allow="pattern",
                         allow_pattern="[bo")  # fmt: skip
    assert Entry.objects.count() == start and PiiListEntry.objects.count() == 1
    _, changed = pii_finding_mark(actor=steward, scan=scan, number=1, state="false_positive", allow="pattern",
                                  allow_pattern=r"noreply@[a-z.]+")  # fmt: skip
    (added,) = _bodies(start)
    assert changed and added["action"] == "pii_list.entry_added" and added["payload"]["pattern"] == r"noreply@[a-z.]+"
    assert for_project(project).describe()["allow_patterns"] == 1

    # An erased record cannot be read, so its value cannot be allowed: refused, nothing changed.
    dataset_version_erase_records(
        actor=people["compliance_officer"], version=version, record_numbers={2}, reason="request DSR-2"
    )
    start = Entry.objects.count()
    with pytest.raises(Conflict, match="was erased"):
        pii_finding_mark(actor=steward, scan=scan, number=2, state="false_positive", allow="value")
    assert Entry.objects.count() == start


@pytest.mark.django_db
def test_for_project_reads_the_projects_rows(people: dict[str, Any]) -> None:
    project = people["project"]
    assert not for_project(project)
    pii_list_entry_add(
        actor=people["data_steward"], project=project, kind="deny", match="pattern", text=r"CUST-\d{6}",
        entity="CUSTOMER_CODE", reason="customer numbers",
    )  # fmt: skip
    assert for_project(project).apply(TEXT, []) == [_hit("CUSTOMER_CODE", "CUST-123456", 1.0)]


@pytest.mark.django_db
def test_the_next_scan_applies_the_lists_and_records_them(people: dict[str, Any]) -> None:
    """The same noise is not reviewed twice: after the steward allows finding 1's value, a rescan
    of the version no longer reports it; a deny entry's term is reported under its type."""
    from registry.services import pii_scan_request

    steward, project = people["data_steward"], people["project"]
    version, scan = _scanned(people)
    assert scan.findings["EMAIL_ADDRESS"]["count"] == 2
    pii_finding_mark(actor=steward, scan=scan, number=1, state="false_positive", allow="value")
    pii_list_entry_add(
        actor=steward, project=project, kind="deny", match="term", text="late parcel", entity="COMPLAINT",
        reason="complaints are kept apart",
    )  # fmt: skip
    rescan = pii_scan_request(actor=steward, version=version)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=rescan.pk, actor=people["system"])
    rescan.refresh_from_db()
    assert {entity: f["count"] for entity, f in rescan.findings.items()} == {"COMPLAINT": 1, "EMAIL_ADDRESS": 1}
    assert rescan.findings["EMAIL_ADDRESS"]["samples"][0]["record"] == 2  # bo@..., not the allowed noreply@...
    assert rescan.engine["pii_lists"] == for_project(project).describe()
