"""The records an answer covers are the ones the scan indexed: an address after dashes or before
a dash is the person's, as the scan reads it; a person indexed in a version where no record can
be singled out stops the answer instead of a false "no data held" or an erasure that leaves the
records. A request of a person erased meanwhile loses its sealed identifiers when it closes.
Dates out of range are refused naming the field. An extension keeps an overdue confirmation of
receipt flagged."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audits.ledger.models import Entry
from audits.ledger.services import ERASED, vault_open
from audits.privacy import selectors
from audits.privacy.models import DataSubjectRequest
from audits.privacy.services import dsr_access_package, dsr_complete, dsr_erase, dsr_withdraw
from audits.privacy.tests.test_requests import ANA, CONTACTS, _receive, _scanned_version, _searched
from common.errors import Conflict, DomainError
from governance.services import api_token_create
from registry.models import DatasetVersion
from registry.records import read_records
from registry.services import dataset_version_bytes

pytestmark = pytest.mark.django_db

ROWS = [
    {"text": f"thanks, see you monday --{ANA}"},
    {"text": f"{ANA}- call me back"},
    {"text": "hana.silva@example.org is another customer"},
    {"text": "x.ana.silva@example.org is another one"},
    {"text": "ana.silva@example.org.uk is abroad"},
] + [{"text": f"ticket {i}: shipped"} for i in range(15)]


def test_an_address_after_dashes_or_before_a_dash_is_found_and_erased(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    version = _scanned_version(people, "contacts", ROWS)
    package, _ = dsr_access_package(actor=officer, request=_searched(people, "access"))
    assert package["data_held"] is True
    assert sorted(r["record"] for r in package["records"]) == [1, 2]
    erased = dsr_erase(actor=officer, request=_searched(people, "erasure"))
    assert erased.erasure["replaced"][0]["records_removed"] == 2
    new = DatasetVersion.objects.get(pk=erased.erasure["replaced"][0]["new"])
    kept = [r.fields["text"] for r in read_records(dataset_version_bytes(new), new.format)]
    assert kept == [row["text"] for row in ROWS[2:]]  # the other addresses stay
    version.refresh_from_db()
    assert version.erased_at is not None


def test_a_person_indexed_where_no_record_can_be_singled_out_stops_the_answer(
    people: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan's index and the record matcher disagree (the matcher is narrowed here to find
    nothing, as it would for an address form it does not read like the scan)."""
    officer = people["compliance_officer"]
    version = _scanned_version(people, "contacts", CONTACTS)
    access, erasure = _searched(people, "access"), _searched(people, "erasure")
    monkeypatch.setattr(selectors, "person_records", lambda version, matches: [])
    before = Entry.objects.count()
    for answer, request in ((dsr_access_package, access), (dsr_erase, erasure)):
        with pytest.raises(Conflict, match=rf"refused, nothing changed: the scan indexed .* in {version}") as caught:
            answer(actor=officer, request=request)
        assert caught.value.code == "records_not_singled_out"
    assert Entry.objects.count() == before
    version.refresh_from_db()
    erasure.refresh_from_db()
    assert version.erased_at is None and erasure.erased_at is None
    assert vault_open(erasure.identifiers_sealed) != ERASED  # the request can be answered once fixed


@pytest.mark.parametrize("close", ["withdraw", "complete"])
def test_a_request_of_a_person_erased_meanwhile_loses_its_identifiers_when_it_closes(
    people: dict[str, Any], close: str
) -> None:
    officer = people["compliance_officer"]
    _scanned_version(people, "contacts", CONTACTS)
    other = _searched(people, "access") if close == "complete" else _receive(people, "access")
    erasure = dsr_erase(actor=officer, request=_searched(people, "erasure"))
    assert vault_open(erasure.identifiers_sealed) == ERASED
    assert vault_open(DataSubjectRequest.objects.get(pk=other.pk).identifiers_sealed) != ERASED  # still open
    if close == "withdraw":
        dsr_withdraw(actor=officer, request=other, reason="asked by phone to stop")
    else:
        package, _ = dsr_access_package(actor=officer, request=other)
        assert package["data_held"] is False  # the versions that held her were replaced
        dsr_complete(actor=officer, request=other, nature="access package sent")
    other.refresh_from_db()
    assert vault_open(other.identifiers_sealed) == ERASED
    shredded = Entry.objects.filter(action="ledger.data_subject.erased").order_by("-index").first()
    assert f"request {erasure.pk}" in bytes(shredded.body).decode()


def test_dates_out_of_range_are_refused_naming_the_field(people: dict[str, Any]) -> None:
    with pytest.raises(DomainError, match="received_at: 1900-01-01T00:00:00"):
        from datetime import UTC, datetime

        _receive(people, received_at=datetime(1900, 1, 1, tzinfo=UTC))
    officer, auditor = people["compliance_officer"], people["auditor"]
    client = Client(raise_request_exception=False)
    body = {"regime": "gdpr", "kind": "access", "channel": "web_form", "received_at": "0001-01-01T00:30:00+01:00",
            "identifiers": [{"kind": "EMAIL_ADDRESS", "value": ANA}]}  # fmt: skip
    token = api_token_create(actor=officer, user=officer, name="t")[1]
    created = client.post("/api/v1/privacy/projects/assistant/requests/", body, content_type="application/json",
                          HTTP_AUTHORIZATION=f"Token {token}")  # fmt: skip
    assert created.status_code == 400 and "received_at" in created.json()["error"]["message"]
    token = api_token_create(actor=auditor, user=auditor, name="t")[1]
    log = client.get("/api/v1/privacy/projects/assistant/request-log", {"since": "0001-01-01T00:30:00+01:00"},
                     HTTP_AUTHORIZATION=f"Token {token}")  # fmt: skip
    assert log.status_code == 400 and "since" in log.json()["error"]["message"]
    assert not DataSubjectRequest.objects.exists()


def test_an_extension_keeps_an_overdue_confirmation_flagged_and_notified_once(
    people: dict[str, Any], mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    from datetime import UTC, datetime

    from audits.privacy.models import DeadlineFlag
    from audits.privacy.services import dsr_deadlines_flag, dsr_extend

    officer = people["compliance_officer"]
    officer.email = "dpo@example.org"
    officer.save()
    ccpa = _receive(people, "delete", regime="ccpa", received_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    late = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)  # receipt due 16 March, not confirmed
    with django_capture_on_commit_callbacks(execute=True):
        assert dsr_deadlines_flag(actor=people["system"], now=late) == [ccpa.pk]
    extended = dsr_extend(actor=officer, request=ccpa, reason="volume", now=late)
    assert extended.deadline_flag == DeadlineFlag.OVERDUE
    with django_capture_on_commit_callbacks(execute=True):
        assert dsr_deadlines_flag(actor=people["system"], now=late) == []
    assert [m.subject for m in mailoutbox] == [f"Data-subject request #{ccpa.pk} is overdue"]
