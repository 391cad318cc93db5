"""Reports per AI system: the Annex IV of a system with two deployments and a serious incident,
generated as a scheduled job does it (``manage.py report generate``), read back with poppler's
``pdfsig`` and ``pdftotext``, two pages rendered to PNG for a person to look at, and checked by
``report verify``; the governance audit's AI systems and incidents; the request through the API
and the admin's form, and its refusals.

One world serves the module's one story (it trains nothing, but the tiny model and its data are
dear to build).
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from audits.reports.models import ReportKind, ReportRun
from audits.reports.tests.test_report_content import ANNEX_IV_POINTS, ARTIFACTS, PROFILE, _copy_with_marker
from conftest import require_tool

pytestmark = pytest.mark.django_db


def _system(world: dict[str, Any]) -> Any:
    """The AI system, registered and classified (an Annex III use: high-risk) by the ML engineer,
    the classification approved by the compliance officer, through the systems services."""
    from governance.services import approval_request_decide
    from systems.services import ai_system_classification_create, ai_system_classification_submit, ai_system_register

    engineer = world["ml_engineer"]
    system = ai_system_register(
        actor=engineer, project=world["project"], slug="ticket-triage", name="Ticket triage",
        purpose="Drafts answers to support tickets for human agents to edit.", owner=engineer,
        deployers=["Support desk EU"],
    )  # fmt: skip
    from systems.rules import QUESTIONS

    answers: dict[str, Any] = {q.id: False for q in QUESTIONS if q.kind == "yes_no"}
    answers.update(annex_iii_areas=["employment"], art_6_3_exception="none", profiles_natural_persons=True,
                   interacts_with_people=True, generates_synthetic_content=True, uses_gpai_model=True)  # fmt: skip
    classification = ai_system_classification_create(actor=engineer, system=system, answers=answers)
    request = ai_system_classification_submit(actor=engineer, classification=classification)
    approval_request_decide(actor=world["compliance_officer"], request_id=request.pk, decision="approve",
                            reason="Annex III employment use: high-risk")  # fmt: skip
    system.refresh_from_db()
    assert system.risk_class == "high", system.risk_class
    return system


@pytest.fixture
def world(ready: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    from governance.services.organisation import organisation_profile_update
    from incidents.services import incident_classify, incident_register, incident_report_to_authority
    from registry.services import model_version_register_folder
    from serving.services import deployment_request

    engineer = ready["ml_engineer"]
    imports = tmp_path / "imports"
    with override_settings(REGISTRY_ALLOWED_ROOTS=[imports.resolve()]):
        folder = _copy_with_marker(Path(ready["base"].source), imports / "trained", "trained")
        trained, _ = model_version_register_folder(
            actor=engineer, model=ready["base"].model, folder=str(folder), base=ready["base"],
            dataset_versions=[ready["version"]],
        )  # fmt: skip
    system = _system(ready)
    deployments = [
        deployment_request(
            actor=engineer, model_version=version, name=name, environment="staging", target={},
            guard={"mode": "redact"}, ai_system=system,
        )
        for name, version in (("triage-eu", ready["base"]), ("triage-next", trained))
    ]  # fmt: skip
    assert all(d.ai_system == system for d in deployments)
    incident = incident_register(
        actor=engineer, project=ready["project"], title="Answer disclosed another customer's order",
        description="A drafted answer quoted an order of another customer.",
        aware_at=timezone.now() - dt.timedelta(days=1), ai_systems=[system.pk], deployments=[deployments[0].pk],
    )  # fmt: skip
    incident = incident_classify(actor=ready["compliance_officer"], incident=incident, serious=True,
                                 serious_kind="fundamental_rights")  # fmt: skip
    # Two incidents reported to the authority (an initial report, then the complete one), so the
    # report's rows are written for more than one reported incident.
    for number, kind in ((1, "health"), (2, "property_or_environment")):
        reported = incident_register(
            actor=engineer, project=ready["project"], title=f"Reported incident {number}",
            description="A wrong dosage answer reached a customer.", aware_at=timezone.now() - dt.timedelta(days=3),
            ai_systems=[system.pk],
        )  # fmt: skip
        reported = incident_classify(actor=ready["compliance_officer"], incident=reported, serious=True,
                                     serious_kind=kind)  # fmt: skip
        for complete in (False, True):
            incident_report_to_authority(actor=ready["compliance_officer"], incident=reported,
                                         reported_at=timezone.now(), reference=f"MSA-2026-{number}",
                                         complete=complete)  # fmt: skip
    organisation_profile_update(actor=ready["system"], **PROFILE)
    return {**ready, "trained": trained, "deployments": deployments, "system": system, "incident": incident}


def _generate(world: dict[str, Any], kind: str, out: Path, *extra: str) -> str:
    stdout = io.StringIO()
    call_command("report", "generate", kind, "--as", world["compliance_officer"].username, "--project",
                 world["project"].slug, "--out", str(out), *extra, stdout=stdout)  # fmt: skip
    return stdout.getvalue()


def _pages(pdf: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    return text.split("\f")[:-1]


def test_ai_system_annex_iv_and_governance_audit(world: dict[str, Any], tmp_path: Path) -> None:
    """The system's Annex IV names its risk class, the classification's answers, both deployments
    and their model versions, and the serious incident with its Art. 73 due date; it is signed
    (pdfsig), verified with its claims, and its first pages rendered to PNG. The governance audit
    lists the system with its class and the incident with its clock."""
    require_tool(all(shutil.which(t) for t in ("pdftotext", "pdftoppm", "pdfsig")), "poppler-utils")
    system, incident = world["system"], world["incident"]
    out = tmp_path / "system.pdf"
    said = _generate(world, ReportKind.AI_SYSTEM_ANNEX_IV, out, "--ai-system", str(system.pk))
    run = ReportRun.objects.get(kind=ReportKind.AI_SYSTEM_ANNEX_IV)
    assert run.state == "done" and run.ai_system_id == system.pk and str(run.report_id) in said
    requested = Entry.objects.filter(action="report.requested", subject_id=str(run.report_id)).get()
    assert b'"ai_system":%d' % system.pk in bytes(requested.body)
    assert Entry.objects.get(index=run.ledger_index).action == "report.generated"

    pdfsig = subprocess.run(["pdfsig", str(out)], capture_output=True, text=True, check=False).stdout
    assert "Signature Validation: Signature is Valid." in pdfsig, pdfsig
    verified = io.StringIO()
    call_command("report", "verify", str(out), stdout=verified)
    claims = int(verified.getvalue().rsplit(" claims borne out", 1)[0].rsplit(" ", 1)[-1])
    assert claims > 5, verified.getvalue()
    pages = _pages(out)
    assert not any("DRAFT" in page for page in pages)
    text = " ".join(" ".join(pages).split())
    positions = [text.find(point) for point in ANNEX_IV_POINTS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    assert "AI system assistant/ticket-triage" in text
    assert "high-risk (Art. 6, Annex III)" in text  # the risk class
    assert "In which Annex III areas is the system intended to be used?" in text  # a question, by its text
    assert "Annex III" in text.split("Why the answers give this class:", 1)[1][:300]  # the reasons
    assert "Support desk EU" in text  # the deployers
    for d in world["deployments"]:
        assert f"{d.name} #{d.pk}" in text
    assert f"tiny v{world['base'].number}" in text and f"tiny v{world['trained'].number}" in text
    folder = ARTIFACTS / "ai_system_annex_iv"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(out, folder / "report.pdf")
    assert "INC-1" in text and "SERIOUS" in text
    due = f"{incident.report_due_at:%Y-%m-%d}"  # the Art. 73 due date (its time wraps in the cell)
    start = text.find("INC-1 ")  # the last row (by awareness); its cells wrap, so their words interleave
    row = text[start : text.find("page", start)]
    assert row.count(due) >= 2 and "day(s) left" in row
    assert "not reported" in text
    assert "INC-2" in text and "INC-3" in text and "(MSA-2026-1)" in text and "(MSA-2026-2)" in text
    assert text.count("marked (") == 2  # both deployments mark their output (the defaults)
    assert "declaration" in text and "Not held by this service" in text
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(out), str(folder / "page")], check=True)
    assert len(list(folder.glob("page-*.png"))) == 2

    audit = tmp_path / "audit.pdf"
    _generate(world, ReportKind.GOVERNANCE_AUDIT, audit, "--from", (dt.date.today() - dt.timedelta(days=7)).isoformat())
    text = " ".join(" ".join(_pages(audit)).split())
    assert "AI systems and their risk class" in text and "assistant/ticket-triage" in text
    assert "1 AI systems registered: 1 high-risk (Art. 6, Annex III)" in text
    assert "Incidents in the period" in text and "INC-1" in text and f"due {due}" in text
    verified = io.StringIO()
    call_command("report", "verify", str(audit), stdout=verified)
    assert "claims borne out" in verified.getvalue()

    _requested_through_the_api_and_the_admin(world)


def _requested_through_the_api_and_the_admin(world: dict[str, Any]) -> None:
    """The API and the admin's form ask for it by the system's id; a wrong or missing system is a
    400 naming the field, with nothing recorded; the form lists the systems by name."""
    from common.testing import admin_login

    system = world["system"]
    client = Client()
    admin_login(client, world["compliance_officer"])
    today = dt.date.today().isoformat()
    body = {"kind": "ai_system_annex_iv", "project": "assistant", "period_start": today, "period_end": today}
    before = (ReportRun.objects.count(), Entry.objects.filter(action="report.requested").count())
    missing = client.post("/api/v1/reports/", body, "application/json")
    assert missing.status_code == 400 and "ai_system" in missing.json()["error"]["fields"], missing.json()
    unknown = client.post("/api/v1/reports/", {**body, "ai_system": system.pk + 100}, "application/json")
    assert unknown.status_code == 400 and "ai_system" in unknown.json()["error"]["fields"]
    wrong_kind = client.post("/api/v1/reports/", {**body, "kind": "dpia", "ai_system": system.pk}, "application/json")
    assert wrong_kind.status_code == 400
    assert (ReportRun.objects.count(), Entry.objects.filter(action="report.requested").count()) == before
    created = client.post("/api/v1/reports/", {**body, "ai_system": system.pk}, "application/json")
    assert created.status_code == 202 and created.json()["ai_system"] == system.pk, created.content

    url = "/admin/reports/reportrun/generate/"
    assert "assistant / ticket-triage (Ticket triage)" in client.get(url).content.decode()
    form = {"kind": "ai_system_annex_iv", "project": world["project"].pk, "period_start": today, "period_end": today}
    refused = client.post(url, form).content.decode()
    assert "documents one AI system: choose one" in refused
    assert client.post(url, {**form, "ai_system": system.pk}).status_code == 302
    assert ReportRun.objects.order_by("-pk").first().ai_system_id == system.pk
    # The list names the kind without its legal reference, and says what it documents.
    listing = client.get("/admin/reports/reportrun/").content.decode()
    label = "Technical documentation (EU AI Act Annex IV) of an AI system"
    assert f'<span title="{label}">Technical documentation of an AI system</span>' in listing
