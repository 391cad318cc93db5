"""An erasure reaches the incident register: the person's identifiers are blanked in the free text
of the project's incidents that name them, the ledger's sealed copies of that text are shredded
(and journalled), the blanked text is sealed again, and other incidents are left as they are."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.ledger.backup.journal import journal_read
from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.services import ERASED, vault_open
from audits.ledger.verification import ledger_verify
from audits.privacy.models import RequestState
from audits.privacy.services import (
    dsr_access_package,
    dsr_erase,
    dsr_erasure_plan,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
)
from common.errors import Conflict, DomainError, PermissionDenied
from common.testing import admin_login
from incidents.models import Incident
from incidents.services import incident_classify, incident_close, incident_register, incident_text_erase

pytestmark = pytest.mark.django_db

ANA = "ana.silva@example.org"
IDENTIFIERS = [
    {"kind": "email", "value": ANA},
    {"kind": "name", "value": "Ana Silva"},
    {"kind": "phone", "value": "+62 812-3456-7890"},
]


def _register(people: dict[str, Any], title: str, description: str) -> Incident:
    return incident_register(
        actor=people["ml_engineer"], project=people["project"], title=title, description=description,
        aware_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip


def _searched(people: dict[str, Any], identifiers: list[dict[str, str]] = IDENTIFIERS) -> Any:
    officer = people["compliance_officer"]
    request = dsr_receive(
        actor=officer, project=people["project"], regime="gdpr", kind="erasure", channel="email",
        received_at=timezone.now(), identifiers=identifiers,
    )  # fmt: skip
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    return dsr_search(actor=officer, request=request)


def _payloads(incident: Incident) -> list[dict[str, Any]]:
    entries = Entry.objects.filter(subject_type="incident", subject_id=str(incident.pk)).order_by("index")
    return [json.loads(bytes(e.body))["payload"] for e in entries]


@pytest.fixture
def register(people: dict[str, Any]) -> dict[str, Incident]:
    officer = people["compliance_officer"]
    named = _register(
        people, "Invoice shown to the wrong customer",
        "Ana Silva (ANA.SILVA@example.org, +62 812 3456 7890) was shown the invoice of another customer.",
    )  # fmt: skip
    incident_classify(actor=officer, incident=named, serious=False)
    named = incident_close(
        actor=officer, incident=named, root_cause=f"The session cache mixed up {ANA} with another login.",
        corrective_action="Session cache keyed by account; regression test added.",
    )  # fmt: skip
    other = _register(people, "Wrong plan", "hana.silva@example.org was moved to the wrong plan; Ana Silvano too.")
    clean = _register(people, "Latency", "Answers took 30 s for an hour.")
    return {"named": named, "other": other, "clean": clean}


def test_the_search_names_the_incidents_and_the_erasure_blanks_them(
    people: dict[str, Any], register: dict[str, Incident]
) -> None:
    officer, named, other, clean = people["compliance_officer"], *register.values()
    request = _searched(people)
    found = request.findings
    assert found["found"] is True and found["dataset_versions"] == []
    assert found["incidents"] == [{"id": named.pk, "reference": "INC-1", "fields": ["description", "root_cause"]}]
    assert found["message"].endswith("; 1 incident(s) of the project name them in their free text")
    assert "silva" not in json.dumps(found).lower()  # findings name incidents, never their text

    plan = dsr_erasure_plan(actor=officer, request=request)
    assert [(c.incident.pk, c.fields) for c in plan.incidents] == [(named.pk, ["description", "root_cause"])]
    assert plan.versions == [] and plan.models == {}
    sealed_before = _payloads(named)
    old_ref = named.text_ref

    erased = dsr_erase(actor=officer, request=request, confirmed_plan=plan.digest)

    assert erased.state == RequestState.ERASED
    assert erased.erasure["incidents"] == [
        {"id": named.pk, "reference": "INC-1", "fields": ["description", "root_cause"]}
    ]
    named.refresh_from_db()
    assert named.title == "Invoice shown to the wrong customer"
    assert named.description == "[erased] ([erased], [erased]) was shown the invoice of another customer."
    assert named.root_cause == "The session cache mixed up [erased] with another login."
    assert named.corrective_action == "Session cache keyed by account; regression test added."
    # The ledger's sealed copies of the old text are shredded, and journalled for every restore.
    assert named.text_ref != old_ref and DataSubjectKey.objects.get(ref=old_ref).key is None
    assert old_ref in {line.subject for line in journal_read()}
    for payload in sealed_before:
        for name in ("title", "description", "root_cause", "corrective_action"):
            if name in payload:
                assert vault_open(payload[name]) == ERASED
    # The blanked text is sealed again, under the new reference: the ledger still says what the
    # register says.
    blanked = _payloads(named)[-1]
    assert blanked["fields"] == ["description", "root_cause"] and blanked["previous_text_ref"] == old_ref
    fields = ("title", "description", "root_cause", "corrective_action")
    assert {name: vault_open(blanked[name]) for name in fields} == {name: getattr(named, name) for name in fields}
    # Another customer, a longer name, and an incident naming nobody: untouched, still readable.
    for incident, before in ((other, register["other"]), (clean, register["clean"])):
        incident.refresh_from_db()
        assert (incident.description, incident.text_ref) == (before.description, before.text_ref)
        assert vault_open(_payloads(incident)[0]["description"]) == incident.description
    assert "Ana Silvano" in Incident.objects.get(pk=other.pk).description
    bodies = b" ".join(bytes(e.body) for e in Entry.objects.all()).lower()
    assert b"ana silva" not in bodies and ANA.encode() not in bodies and b"812 3456" not in bodies
    assert ledger_verify().tree_size == Entry.objects.count()

    again = _searched(people, [{"kind": "email", "value": ANA}])
    assert again.findings["found"] is False and again.findings["incidents"] == []


def test_a_plan_that_changed_meanwhile_is_refused_and_changes_nothing(
    people: dict[str, Any], register: dict[str, Incident]
) -> None:
    officer = people["compliance_officer"]
    request = _searched(people)
    plan = dsr_erasure_plan(actor=officer, request=request)
    late = _register(people, "Follow-up", "Ana Silva called again about the invoice.")
    before = Entry.objects.count()
    with pytest.raises(Conflict) as caught:
        dsr_erase(actor=officer, request=request, confirmed_plan=plan.digest)
    assert caught.value.code == "plan_changed" and Entry.objects.count() == before
    for incident in (register["named"], late):
        assert Incident.objects.get(pk=incident.pk).description == incident.description
    assert [c.incident.pk for c in dsr_erasure_plan(actor=officer, request=request).incidents] == [
        register["named"].pk, late.pk,
    ]  # fmt: skip


def test_only_an_officer_blanks_an_incident_and_bad_input_changes_nothing(
    people: dict[str, Any], register: dict[str, Incident]
) -> None:
    named = register["named"]

    def find(text: str) -> list[tuple[int, int]]:
        return [(0, 8)] if text.startswith("Ana") else []

    before = Entry.objects.count()
    for role in ("ml_engineer", "data_steward", "auditor"):
        with pytest.raises(PermissionDenied):
            incident_text_erase(actor=people[role], incident=named, find=find, reason="erasure of request 1")
    with pytest.raises(DomainError, match="reason: may not be blank"):
        incident_text_erase(actor=people["compliance_officer"], incident=named, find=find, reason="  ")
    assert Entry.objects.count() == before
    assert Incident.objects.get(pk=named.pk).description == named.description
    # Nothing found: nothing written.
    none = incident_text_erase(actor=people["compliance_officer"], incident=named, find=lambda _: [], reason="x")
    assert none == [] and Entry.objects.count() == before


def test_the_officer_sees_the_incidents_in_the_admin_from_search_to_erasure(
    people: dict[str, Any], register: dict[str, Incident], client: Client
) -> None:
    from audits.privacy.tests.test_admin import LIST, page, text, told

    admin_login(client, people["compliance_officer"])
    named = register["named"]
    request = _searched(people)
    shown = text(client.get(page(request.pk)))
    assert "Incidents whose free text names the person Incident Id Fields" in shown
    assert f"INC-1 {named.pk} description, root cause" in shown
    assert "State Searched: the person's data was found; erase it next" in shown

    confirm = client.get(f"{LIST}{request.pk}/erase/")
    words = text(confirm)
    assert "Dataset versions to be replaced (0)" in words
    assert "Incidents whose free text names the person (1)" in words
    assert f"INC-1 {named.pk} closed description, root cause" in words
    assert "Silva" not in words and "812 3456" not in words  # the page names the incident, not its text
    plan = confirm.context["form"]["plan"].value()

    erased = client.post(f"{LIST}{request.pk}/erase/", {"reference": f"DSR-{request.pk}", "plan": plan}, follow=True)
    assert told(erased) == [
        f"DSR-{request.pk}: erased: 0 dataset version(s) replaced, 0 model review(s) opened, 1 incident(s) blanked, "
        "1 vault key(s) shredded. The request is now erased: complete it once the requester is told."
    ]
    words = text(erased)
    assert "No dataset version held the person." in words
    assert "Incidents whose free text was blanked Incident Fields INC-1 description, root cause" in words
    incident_page = text(client.get(f"/admin/incidents/incident/{named.pk}/change/"))
    assert "[erased] ([erased], [erased]) was shown the invoice of another customer." in incident_page
    assert "Ana Silva" not in incident_page


def test_the_access_package_holds_the_incident_text_that_names_the_person(
    people: dict[str, Any], register: dict[str, Incident]
) -> None:
    officer, named = people["compliance_officer"], register["named"]
    request = dsr_verify_identity(
        actor=officer, request=dsr_receive(
            actor=officer, project=people["project"], regime="gdpr", kind="access", channel="email",
            received_at=timezone.now(), identifiers=[{"kind": "name", "value": "ana silva"}],
        ), method="reply from the address on file",
    )  # fmt: skip
    request = dsr_search(actor=officer, request=request)
    package, digest = dsr_access_package(actor=officer, request=request)
    assert package["data_held"] is True and package["records"] == []
    assert package["incidents"] == [
        {"id": named.pk, "reference": "INC-1", "fields": {"description": named.description}}
    ]  # the root cause names her by address only; "Ana Silvano" of INC-2 is someone else
    issued = _payloads_of_request(request)[-1]
    assert issued["sha256"] == digest and issued["incidents"] == [named.pk]


def _payloads_of_request(request: Any) -> list[dict[str, Any]]:
    entries = Entry.objects.filter(subject_type="data_subject_request", subject_id=str(request.pk)).order_by("index")
    return [json.loads(bytes(e.body))["payload"] for e in entries]


def test_an_incident_whose_sealed_text_was_shredded_before_is_still_blanked(
    people: dict[str, Any], register: dict[str, Incident]
) -> None:
    from audits.ledger.services import data_subject_erase

    officer, named = people["compliance_officer"], register["named"]
    data_subject_erase(actor=officer, subject_ref=named.text_ref, reason="the incident's text alone, earlier")
    erased = dsr_erase(actor=officer, request=_searched(people))
    named.refresh_from_db()
    assert erased.erasure["incidents"][0]["fields"] == ["description", "root_cause"]
    assert "Silva" not in named.description and "[erased]" in named.root_cause
