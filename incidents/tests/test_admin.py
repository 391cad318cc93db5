"""The incident pages, as a compliance officer works them in the browser: register, classify,
record the report, close, each through the forms (which call the services); the list shows the
clock (overdue in red); an auditor reads without forms and a form posted anyway changes nothing."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.ledger.models import Entry
from common.testing import admin_login
from incidents.models import Incident, IncidentState
from incidents.services import incident_classify, incident_register

pytestmark = pytest.mark.django_db
LIST = "/admin/incidents/incident/"


def _local(days_ago: float) -> str:
    return (timezone.now() - timedelta(days=days_ago)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def test_a_compliance_officer_runs_an_incident_in_the_admin(world: dict[str, Any]) -> None:
    officer = Client()
    admin_login(officer, world["compliance_officer"])
    form = officer.get(f"{LIST}add/")
    assert form.status_code == 200 and b"Register the incident" in form.content
    bad = officer.post(f"{LIST}add/", {"project": world["project"].pk, "title": "", "description": "x"})
    assert bad.status_code == 200 and b"This field is required" in bad.content and not Incident.objects.exists()
    sent = officer.post(f"{LIST}add/", {
        "project": world["project"].pk, "title": "Harmful advice", "description": "A completion advised harm.",
        "aware_at": _local(3), "deployments": [world["deployment"].pk],
    })  # fmt: skip
    assert sent.status_code == 302, sent.content.decode()[-2000:]
    incident = Incident.objects.get()
    page = officer.get(sent["Location"])
    assert page.status_code == 200 and b"not classified yet" in page.content and b'id="step-classify"' in page.content
    assert b'id="step-close"' not in page.content  # offered once the service would take it

    step = f"{LIST}{incident.pk}/step"
    kindless = officer.post(f"{step}/classify/", {"serious": "true", "serious_kind": ""}, follow=True)
    assert b"needs what makes it serious, one of: death (death of a person" in kindless.content
    officer.post(f"{step}/classify/", {"serious": "true", "serious_kind": "critical_infrastructure"})
    incident.refresh_from_db()
    assert incident.report_due_at == incident.aware_at + timedelta(days=2)
    listing = officer.get(LIST)
    assert b"incident-overdue" in listing.content and b"OVERDUE by 1 day(s)" in listing.content

    closing = officer.post(f"{step}/close/", {"root_cause": "r", "corrective_action": "c"}, follow=True)
    assert b"report it to the authority before closing" in closing.content
    officer.post(f"{step}/report/", {"reported_at": _local(0.1), "reference": "MSA-7", "complete": "on"})
    assert b'id="step-close"' in officer.get(f"{LIST}{incident.pk}/change/").content
    officer.post(f"{step}/close/", {"root_cause": "a filter was off", "corrective_action": "turned it on"})
    incident.refresh_from_db()
    assert incident.state == IncidentState.CLOSED and incident.authority_reference == "MSA-7"
    assert list(Entry.objects.filter(subject_type="incident").values_list("action", flat=True).order_by("index")) == [
        "incident.registered", "incident.classified", "incident.reported", "incident.closed"
    ]  # fmt: skip
    closed = officer.get(f"{LIST}{incident.pk}/change/")
    assert b"a filter was off" in closed.content and b'id="step-' not in closed.content


def test_an_auditor_reads_without_forms(world: dict[str, Any]) -> None:
    incident = incident_register(
        actor=world["ml_engineer"], project=world["project"], title="t", description="d",
        aware_at=timezone.now() - timedelta(days=1),
    )  # fmt: skip
    auditor = Client()
    admin_login(auditor, world["auditor"])
    assert auditor.get(f"{LIST}add/").status_code == 403
    page = auditor.get(f"{LIST}{incident.pk}/change/")
    assert page.status_code == 200 and b"incident-read-only" in page.content and b'id="step-' not in page.content
    refused = auditor.post(f"{LIST}{incident.pk}/step/classify/", {"serious": "false"}, follow=True)
    assert b"compliance_officer or platform_admin" in refused.content
    engineer = Client()
    admin_login(engineer, world["ml_engineer"])
    page = engineer.get(f"{LIST}{incident.pk}/change/")
    assert b'id="step-link"' in page.content and b'id="step-classify"' not in page.content
    incident_classify(actor=world["compliance_officer"], incident=incident, serious=False)
    assert Incident.objects.get().serious is False
    stranger = Client()
    admin_login(stranger, world["stranger"])
    assert stranger.get(f"{LIST}{incident.pk}/change/").status_code in (302, 404)
