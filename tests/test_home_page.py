"""The admin's home page per person (config/home.py): the decisions waiting for them, data-subject
requests near their deadline for compliance officers, open incidents by their clock, reviews, failed or stuck jobs, the ledger's
last checkpoint and verification; each panel only for those who may open its rows, each link
opening; Django's list of pages below."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from audits.ledger.services import checkpoint_create
from audits.privacy.services import dsr_receive
from common import artifacts
from common.testing import admin_login
from governance.roles import Role
from governance.services import approval_break_glass, approval_request_decide, project_role_grant
from incidents.services import incident_classify, incident_register
from registry.models import DatasetVersion, PiiScan
from registry.services import pii_scan_run
from tests.decisions import clean_version, training_request

pytestmark = pytest.mark.django_db


def _home(client: Any, user: Any) -> str:
    admin_login(client, user)
    response = client.get("/admin/")
    assert response.status_code == 200
    return response.content.decode()


def _panel(page: str, panel: str) -> str | None:
    """The text of one panel, or ``None`` when the page does not show it."""
    found = re.search(rf'<section[^>]*id="home-{panel}".*?</section>', page, re.S)
    return None if found is None else re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))).strip()


def test_decisions_waiting_for_me_are_those_i_may_decide(client: Any, people: dict[str, Any]) -> None:
    both = training_request(people, risk_tier="high")
    approval_request_decide(actor=people["data_steward"], request_id=both.pk, decision="approve", reason="clean")
    stewards = training_request(people)
    page = _home(client, people["compliance_officer"])
    officer = _panel(page, "decisions")
    assert officer is not None and officer.startswith("Decisions waiting for me (1)")
    version = DatasetVersion.objects.get(pk=both.subject_id)  # the request in words, the version by its name
    assert f"#{both.pk} use for training: {version.dataset.project.slug}/{version.dataset.slug} v1" in officer
    assert f'href="/admin/governance/approvalrequest/{both.pk}/change/"' in page
    assert f"#{stewards.pk} " not in officer
    steward = _panel(_home(client, people["data_steward"]), "decisions")
    assert steward is not None and steward.startswith("Decisions waiting for me (1)")
    assert f"#{stewards.pk} " in steward and f"#{both.pk} " not in steward
    auditor = _panel(_home(client, people["auditor"]), "decisions")
    assert auditor == "Decisions waiting for me (0) Nothing waits for your decision."


def test_data_subject_requests_near_their_deadline_are_for_compliance_officers(
    client: Any, people: dict[str, Any]
) -> None:
    now = timezone.now()
    made = {
        days: dsr_receive(
            actor=people["compliance_officer"], project=people["project"], regime="gdpr", kind="access",
            channel="email", received_at=now - timedelta(days=days),
            identifiers=[{"kind": "email", "value": f"person{days}@example.org"}],
        )
        for days in (40, 26, 1)
    }  # fmt: skip
    panel = _panel(_home(client, people["compliance_officer"]), "deadlines")
    assert panel is not None and panel.startswith("Data-subject requests near their deadline (2)")
    overdue, soon = panel.index(f"Request {made[40].pk}:"), panel.index(f"Request {made[26].pk}:")
    assert overdue < soon  # the most urgent first
    assert "overdue" in panel[overdue:soon] and "due soon" in panel[soon:]
    assert f"Request {made[1].pk}:" not in panel
    for reader in ("auditor", "data_steward"):  # an auditor reads them, but does not answer them
        assert _panel(_home(client, people[reader]), "deadlines") is None


def test_reviews_and_failed_or_stuck_jobs(client: Any, people: dict[str, Any]) -> None:
    admin = get_user_model().objects.create_user(username="platform-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="test setup")  # fmt: skip
    request = training_request(people)
    approval_break_glass(actor=admin, request_id=request.pk, justification="the outage needs the fix tonight")
    failed = clean_version(people, scanned=False)
    artifacts.blob_path(failed.sha256).unlink()
    pii_scan_run(scan_id=PiiScan.objects.get(version=failed).pk, actor=people["system"])
    waiting = clean_version(people, scanned=False)
    page = _home(client, people["compliance_officer"])
    reviews = _panel(page, "reviews")
    assert reviews is not None and reviews.startswith("Reviews awaiting a decision (1)")
    assert f"Break-glass approval of request #{request.pk} (dataset_version.use_for_training)" in reviews
    assert "by platform-admin" in reviews and "to review" in reviews
    jobs = _panel(page, "jobs")
    assert jobs is not None and jobs.startswith("Failed or stuck jobs (1)")
    assert f"PII scan: scan {PiiScan.objects.get(version=failed).pk} of {failed}" in jobs
    assert "missing from the artifact store" in jobs
    with override_settings(PII_SCAN_LEASE_S=0):  # the queued scan has waited past its lease: stuck
        jobs = _panel(_home(client, people["compliance_officer"]), "jobs")
    assert jobs is not None and jobs.startswith("Failed or stuck jobs (2)")
    assert f"scan {PiiScan.objects.get(version=waiting).pk} of {waiting}" in jobs and "stuck" in jobs
    # Someone without a role in the project sees none of it.
    outsider = get_user_model().objects.create_user(username="outsider", is_staff=True)
    outsider.groups.add(*people["compliance_officer"].groups.all())
    page = _home(client, outsider)
    assert _panel(page, "jobs") == "Failed or stuck jobs (0) No job failed in the last 14 days, and none is stuck."
    assert _panel(page, "reviews") == "Reviews awaiting a decision (0) No model review or break-glass review is open."


def test_open_incidents_by_their_art_73_clock(client: Any, people: dict[str, Any]) -> None:
    officer, project, now = people["compliance_officer"], people["project"], timezone.now()

    def incident(title: str, days_ago: int, serious: bool | None, kind: str = "") -> Any:
        made = incident_register(actor=officer, project=project, title=title, description="what happened",
                                 aware_at=now - timedelta(days=days_ago))  # fmt: skip
        return made if serious is None else incident_classify(actor=officer, incident=made, serious=serious,
                                                              serious_kind=kind)  # fmt: skip

    late = incident("A death the model's advice contributed to", 11, True, "death")  # 10 days: overdue
    soon = incident("Harm to a patient's health", 3, True, "health")  # 15 days: 12 left
    unclassified = incident("Answers about a person's loan", 1, None)
    incident("A typo in an answer", 1, False)  # not serious: no clock, not shown
    page = _home(client, officer)
    panel = _panel(page, "incidents")
    assert panel is not None and panel.startswith("Open incidents (3)")
    order = [panel.index(f"#{i.number}:") for i in (late, soon, unclassified)]
    assert order == sorted(order)  # the most urgent first; the unclassified after every clock
    assert "overdue" in panel[order[0] : order[1]] and "OVERDUE by 1 day(s)" in panel
    assert "11 day(s) left" in panel[order[1] : order[2]] and "to classify" in panel[order[2] :]
    assert "typo" not in panel
    assert f'href="/admin/incidents/incident/{late.pk}/change/"' in page
    outsider = get_user_model().objects.create_user(username="outsider", is_staff=True)
    outsider.groups.add(*officer.groups.all())
    assert _panel(_home(client, outsider), "incidents") == (
        "Open incidents (0) No incident is open that is serious or waits for its classification."
    )


def test_the_ledger_panel_and_the_list_of_pages(client: Any, people: dict[str, Any]) -> None:
    training_request(people)
    page = _home(client, people["auditor"])
    assert _panel(page, "ledger") == (
        "The ledger No checkpoint signed yet unsigned The ledger has not been verified yet never "
        "manage.py ledger verify"
    )
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    call_command("ledger", "verify", stdout=io.StringIO())
    page = _home(client, people["auditor"])
    ledger = _panel(page, "ledger")
    assert ledger is not None
    assert f"Last signed checkpoint: size {checkpoint.tree_size}" in ledger
    assert f"Last verification: passed at size {checkpoint.tree_size}" in ledger
    # Django's list of pages stays, below the panels.
    assert page.index('id="home-ledger"') < page.index("All pages") < page.index("Approval requests")
    # The steward reads no ledger page: no ledger panel.
    assert _panel(_home(client, people["data_steward"]), "ledger") is None


def test_every_link_of_the_home_page_opens(client: Any, people: dict[str, Any]) -> None:
    both = training_request(people, risk_tier="high")
    approval_request_decide(actor=people["data_steward"], request_id=both.pk, decision="approve", reason="clean")
    checkpoint_create()
    for role in ("compliance_officer", "data_steward", "auditor"):
        page = _home(client, people[role])
        links = set(re.findall(r'href="(/admin/[^"]*)"', page))
        assert links
        broken = {link: status for link in links if (status := client.get(link).status_code) >= 400}
        assert broken == {}, role
