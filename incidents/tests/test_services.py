"""The incident services: register, link, classify, report, close, and the clock check, each with
the ledger entries it writes; the refusals (another project's deployment, an auditor registering,
closing without a root cause or before reporting)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audits.ledger.models import Entry, EntryScope
from audits.ledger.services import data_subject_erase, is_sealed, vault_open
from common.errors import Conflict, DomainError, NotFound, PermissionDenied
from incidents.models import Incident, IncidentState, SeriousKind
from incidents.services import (
    incident_classify,
    incident_clocks_check,
    incident_close,
    incident_link,
    incident_register,
    incident_report_to_authority,
)
from incidents.tasks import check_clocks

pytestmark = pytest.mark.django_db

HARMED = "Ana Example"


def entries(incident: Incident) -> list[tuple[str, dict[str, Any]]]:
    found = Entry.objects.filter(subject_type="incident", subject_id=str(incident.pk)).order_by("index")
    return [(e.action, json.loads(bytes(e.body))["payload"]) for e in found]


def register(world: dict[str, Any], *, days_ago: float = 0, **overrides: Any) -> Incident:
    arguments: dict[str, Any] = {
        "actor": world["ml_engineer"], "project": world["project"], "title": "Wrong dosage advice",
        "description": f"The assistant told {HARMED} to double a dose.",
        "aware_at": timezone.now() - timedelta(days=days_ago),
    }  # fmt: skip
    return incident_register(**{**arguments, **overrides})


def test_register_links_and_seals_the_text(world: dict[str, Any]) -> None:
    incident = register(world, deployments=[world["deployment"].pk], ai_systems=[world["system_"].pk])
    second = register(world)
    assert (incident.number, second.number, incident.reference) == (1, 2, "INC-1")
    assert incident.state == IncidentState.OPEN and incident.serious is None and incident.report_due_at is None
    assert list(incident.deployments.all()) == [world["deployment"]]
    assert list(world["system_"].incidents.all()) == [incident]
    [(action, payload)] = entries(incident)
    assert action == "incident.registered"
    assert payload["deployments"] == [world["deployment"].pk] and payload["ai_systems"] == [world["system_"].pk]
    assert is_sealed(payload["description"]) and vault_open(payload["description"]).endswith("double a dose.")
    body = bytes(Entry.objects.get(action="incident.registered", subject_id=str(incident.pk)).body).decode()
    assert HARMED not in body and "dosage" not in body
    # The entry is the project's (its readers see it), and the text can be shredded in the vault.
    entry = Entry.objects.get(action="incident.registered", subject_id=str(incident.pk))
    assert EntryScope.objects.get(entry=entry).project_id == world["project"].pk
    data_subject_erase(actor=world["system"], subject_ref=incident.text_ref, reason="the person asked")
    assert vault_open(payload["description"]) == "[erased]"


def test_register_refusals_change_nothing(world: dict[str, Any]) -> None:
    other = world["other_deployment"].pk
    with pytest.raises(DomainError) as refused:
        register(world, deployments=[world["deployment"].pk, other], ai_systems=[world["other_system"].pk])
    assert refused.value.status_code == 400
    assert refused.value.fields == {
        "ai_systems": [f"no AI system {world['other_system'].pk} in project assistant"],
        "deployments": [f"no deployment {other} in project assistant"],
    }
    with pytest.raises(PermissionDenied, match="auditors are read-only"):
        register(world, actor=world["auditor"])
    with pytest.raises(NotFound):
        register(world, actor=world["stranger"])
    with pytest.raises(DomainError, match="title: may not be blank"):
        register(world, title="  ")
    with pytest.raises(DomainError, match=r"aware_at: .* in the future"):
        register(world, days_ago=-2)
    with pytest.raises(DomainError, match="occurred_at"):
        register(world, occurred_at=timezone.now() + timedelta(minutes=1), days_ago=1)
    assert not Incident.objects.exists() and not Entry.objects.filter(subject_type="incident").exists()


def test_link_adds_only_the_projects_own(world: dict[str, Any]) -> None:
    incident = register(world)
    incident = incident_link(actor=world["data_steward"], incident=incident, deployments=[world["deployment"].pk])
    again = incident_link(actor=world["data_steward"], incident=incident, deployments=[world["deployment"].pk])
    assert list(again.deployments.all()) == [world["deployment"]]
    with pytest.raises(DomainError, match=f"no deployment {world['other_deployment'].pk} in project assistant"):
        incident_link(actor=world["ml_engineer"], incident=incident, deployments=[world["other_deployment"].pk])
    with pytest.raises(PermissionDenied):
        incident_link(actor=world["auditor"], incident=incident, ai_systems=[world["system_"].pk])
    assert [(a, p["deployments"]) for a, p in entries(incident)] == [
        ("incident.registered", []), ("incident.linked", [world["deployment"].pk])
    ]  # fmt: skip


def test_classify_sets_the_clock_and_reclassifying_recomputes_it(world: dict[str, Any]) -> None:
    incident = register(world, days_ago=1)
    with pytest.raises(PermissionDenied, match="compliance_officer or platform_admin"):
        incident_classify(actor=world["ml_engineer"], incident=incident, serious=True, serious_kind="health")
    with pytest.raises(DomainError, match="serious_kind"):
        incident_classify(actor=world["compliance_officer"], incident=incident, serious=True, serious_kind="")
    incident = incident_classify(
        actor=world["compliance_officer"], incident=incident, serious=True, serious_kind="health"
    )
    assert incident.report_due_at == incident.aware_at + timedelta(days=15)
    incident = incident_classify(actor=world["platform_admin"], incident=incident, serious=True, serious_kind="death")
    assert incident.report_due_at == incident.aware_at + timedelta(days=10)
    incident = incident_classify(actor=world["compliance_officer"], incident=incident, serious=False)
    assert incident.report_due_at is None and incident.serious is False
    classified = [p for a, p in entries(incident) if a == "incident.classified"]
    assert [(p["serious_kind"], p["clock"]) for p in classified] == [
        ("health", {"days": 15, "article": "Art. 73(2)"}), ("death", {"days": 10, "article": "Art. 73(4)"}), ("", None)
    ]  # fmt: skip
    assert classified[1]["previous"]["serious_kind"] == "health" and classified[0]["previous"] is None


def test_report_initial_then_complete_and_close(world: dict[str, Any]) -> None:
    officer = world["compliance_officer"]
    incident = register(world, days_ago=3)
    with pytest.raises(Conflict, match="classify"):
        incident_report_to_authority(actor=officer, incident=incident, reported_at=timezone.now(), reference="R-1")
    with pytest.raises(Conflict, match="classify"):
        incident_close(actor=officer, incident=incident, root_cause="x", corrective_action="y")
    incident = incident_classify(
        actor=officer, incident=incident, serious=True, serious_kind=SeriousKind.CRITICAL_INFRASTRUCTURE
    )
    with pytest.raises(Conflict, match="report it to the authority before closing"):
        incident_close(actor=officer, incident=incident, root_cause="x", corrective_action="y")
    initial = timezone.now() - timedelta(hours=1)
    incident = incident_report_to_authority(
        actor=officer, incident=incident, reported_at=initial, reference="MSA-2026-17", complete=False
    )
    assert incident.state == IncidentState.REPORTED and incident.authority_reported_at == initial
    with pytest.raises(Conflict, match="initial"):
        incident_close(actor=officer, incident=incident, root_cause="x", corrective_action="y")
    incident = incident_report_to_authority(
        actor=officer, incident=incident, reported_at=timezone.now(), reference="MSA-2026-17"
    )
    assert incident.authority_reported_at == initial and incident.authority_completed_at > initial
    with pytest.raises(Conflict, match="complete report was recorded"):
        incident_report_to_authority(actor=officer, incident=incident, reported_at=timezone.now(), reference="R")
    with pytest.raises(DomainError, match="root_cause: may not be blank"):
        incident_close(actor=officer, incident=incident, root_cause=" ", corrective_action="retrained")
    with pytest.raises(PermissionDenied):
        incident_close(actor=world["ml_engineer"], incident=incident, root_cause="a", corrective_action="b")
    incident = incident_close(
        actor=officer, incident=incident, root_cause=f"{HARMED}'s record was mislabelled", corrective_action="relabel"
    )
    assert incident.state == IncidentState.CLOSED and incident.closed_by == officer
    with pytest.raises(Conflict, match="closed"):
        incident_link(actor=world["ml_engineer"], incident=incident, deployments=[world["deployment"].pk])
    actions = [(a, p) for a, p in entries(incident)]
    assert [a for a, _ in actions] == [
        "incident.registered", "incident.classified", "incident.reported", "incident.reported", "incident.closed"
    ]  # fmt: skip
    # Reported 3 days after awareness on a 2-day clock: the initial report was late.
    assert [(p["initial"], p["complete"], p["late"]) for a, p in actions if a == "incident.reported"] == [
        (True, False, True), (False, True, False)
    ]  # fmt: skip
    closed = actions[-1][1]
    assert is_sealed(closed["root_cause"]) and HARMED in vault_open(closed["root_cause"])


def test_not_serious_closes_without_a_report(world: dict[str, Any]) -> None:
    officer = world["compliance_officer"]
    incident = incident_classify(actor=officer, incident=register(world), serious=False)
    with pytest.raises(Conflict, match="not serious"):
        incident_report_to_authority(actor=officer, incident=incident, reported_at=timezone.now(), reference="R")
    incident = incident_close(actor=officer, incident=incident, root_cause="a typo", corrective_action="fixed")
    assert incident.state == IncidentState.CLOSED


def test_the_clock_check_reminds_at_half_time_and_records_overdue_once(
    world: dict[str, Any], mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    officer = world["compliance_officer"]
    officer.email = "dpo@example.org"
    officer.save()
    late = incident_classify(actor=officer, incident=register(world, days_ago=16), serious=True, serious_kind="health")
    half = incident_classify(actor=officer, incident=register(world, days_ago=8), serious=True, serious_kind="health")
    fresh = incident_classify(actor=officer, incident=register(world, days_ago=1), serious=True, serious_kind="health")
    reported = incident_classify(
        actor=officer, incident=register(world, days_ago=16), serious=True, serious_kind="death"
    )
    incident_report_to_authority(
        actor=officer,
        incident=reported,
        reported_at=reported.aware_at + timedelta(days=2),
        reference="R",
        complete=False,
    )
    calm = incident_classify(actor=officer, incident=register(world, days_ago=30), serious=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert check_clocks() == {"reminded": [half.pk], "overdue": [late.pk]}
        assert check_clocks() == {"reminded": [], "overdue": []}  # idempotent
    late.refresh_from_db()
    assert late.overdue_recorded_at is not None and late.reminded_at is None
    assert [m.subject for m in mailoutbox] == [
        f"Incident assistant/{late.reference} is OVERDUE for its report",
        f"Incident assistant/{half.reference} is half-way through its reporting clock",
    ]
    assert "Wrong dosage" not in mailoutbox[0].body and "Art. 73(2)" in mailoutbox[0].body
    [payload] = [p for a, p in entries(late) if a == "incident.overdue"]
    assert payload["article"] == "Art. 73(2)" and payload["report_due_at"] == late.report_due_at.isoformat()
    assert [a for a, _ in entries(half)][-1] == "incident.reminded"
    assert not Entry.objects.filter(subject_id__in=[str(fresh.pk), str(reported.pk), str(calm.pk)],
                                    action__in=["incident.overdue", "incident.reminded"]).exists()  # fmt: skip
    # A re-classification onto a later due date clears the record: the worker judges the new date.
    late = incident_classify(actor=officer, incident=late, serious=True, serious_kind="death")
    assert late.overdue_recorded_at is None
    assert incident_clocks_check(actor=world["system"])["overdue"] == [late.pk]
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["incidents-check-clocks"]["task"] == check_clocks.name
