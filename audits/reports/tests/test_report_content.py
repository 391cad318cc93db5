"""What the reports say, generated the way a scheduled job does it (``manage.py report generate``),
read back as an auditor reads them (``pdftotext``), rendered to PNG for a person to look at, and
checked by ``report verify``, claims included.

One world serves the whole module's story: a dataset version, a model trained on it, a model
built on that one through its base, a deployment of each, then an erasure of the dataset version.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from audits.ledger.selectors import latest_checkpoint
from audits.reports import builders
from audits.reports.models import ReportKind, ReportRun
from audits.reports.pdf import build_pdf, read_pdf
from audits.reports.services import report_verify, sign_report_pdf
from conftest import require_tool

pytestmark = pytest.mark.django_db

ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "reports"
ANNEX_IV_POINTS = (
    "1. General description of the AI system",
    "2. Elements of the AI system and its development",
    "3. Monitoring, functioning and control",
    "4. Appropriateness of the performance metrics",
    "5. Risk management system",
    "6. Changes over the lifecycle",
    "7. Harmonised standards applied",
    "8. EU declaration of conformity",
    "9. Post-market monitoring",
)
PROFILE = {
    "controller_name": "Contoh Data Sejahtera PT",
    "controller_address": "Jl. Merdeka 1, Jakarta",
    "controller_email": "privacy@contoh.example",
    "representative_name": "EU Rep GmbH",
    "representative_contact": "rep@eurep.example",
    "dpo_not_designated_reason": "no large-scale monitoring or special categories (Art. 37(1))",
    "supervisory_authority_name": "Autoriteit Persoonsgegevens",
    "security_measures": "role-based access per project; an append-only signed ledger",
}


def _copy_with_marker(source: Path, target: Path, marker: str) -> Path:
    shutil.copytree(source, target)
    (target / "MODEL_CARD.md").write_text(marker)  # other weights: another digest
    return target


@pytest.fixture
def world(ready: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    from registry.services import model_create, model_version_register_folder
    from serving.services import deployment_request

    engineer = ready["ml_engineer"]
    imports = tmp_path / "imports"
    folder = Path(ready["base"].source)  # the base's own files: copies with a marker are new weights
    with override_settings(REGISTRY_ALLOWED_ROOTS=[imports.resolve()]):
        model = model_create(actor=engineer, project=ready["project"], slug="helpdesk", name="Helpdesk",
                             description="Drafts answers to support tickets for human agents to edit.")  # fmt: skip
        trained, _ = model_version_register_folder(
            actor=engineer, model=model, folder=str(_copy_with_marker(folder, imports / "trained", "trained")),
            base=ready["base"], dataset_versions=[ready["version"]],
        )  # fmt: skip
        child, _ = model_version_register_folder(
            actor=engineer, model=model, folder=str(_copy_with_marker(folder, imports / "child", "child")), base=trained
        )
    guard = {"mode": "redact"}
    for name, version in (("helpdesk-eu", trained), ("helpdesk-child", child)):
        deployment_request(actor=engineer, model_version=version, name=name, environment="staging", target={},
                           guard=guard)  # fmt: skip
    return {**ready, "trained": trained, "child": child}


def _generate(world: dict[str, Any], kind: str, out: Path, *extra: str) -> str:
    stdout = io.StringIO()
    call_command("report", "generate", kind, "--as", world["compliance_officer"].username, "--project",
                 world["project"].slug, "--out", str(out), *extra, stdout=stdout)  # fmt: skip
    return stdout.getvalue()


def _pages(pdf: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    return text.split("\f")[:-1]


def _png(pdf: Path, name: str) -> list[Path]:
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(folder / "page")], check=True)
    return sorted(folder.glob("page-*.png"))


def _verify(pdf: Path) -> str:
    out = io.StringIO()
    call_command("report", "verify", str(pdf), stdout=out)
    return out.getvalue()


def test_every_report_kind_from_the_command_complete_and_verified(world: dict[str, Any], tmp_path: Path) -> None:
    """Every kind, from the command, through the same service and ledger entries as the admin:
    a draft, marked on every page, while the organisation profile is incomplete; final once it is
    filled in; each verified with its claims; its pages rendered to PNG for a person to look at."""
    from audits.ledger.models import Entry
    from governance.services.organisation import organisation_profile_update
    from registry.services import dataset_version_erase_records

    tools = ("pdftotext", "pdftoppm", "pdfsig")
    require_tool(all(shutil.which(tool) for tool in tools), "poppler-utils (pdftotext, pdftoppm, pdfsig)")
    dataset_version_erase_records(actor=world["compliance_officer"], version=world["version"], record_numbers={1},
                                  reason="GDPR Art. 17 request")  # fmt: skip

    draft = tmp_path / "draft.pdf"
    _generate(world, ReportKind.RECORDS_OF_PROCESSING, draft)
    pages = _pages(draft)
    assert pages and all("DRAFT - incomplete" in page for page in pages)
    assert "not configured" not in "".join(pages)
    assert "the controller's legal name" in pages[0]
    assert "DRAFT - incomplete" in _verify(draft)

    organisation_profile_update(actor=world["system"], **PROFILE)
    written = {}
    # An AI system's Annex IV needs a system: test_ai_system_reports.py generates it.
    for kind in [k for k in ReportKind.values if k != ReportKind.AI_SYSTEM_ANNEX_IV]:
        out = tmp_path / f"{kind}.pdf"
        extra = ("--model-version", str(world["trained"].pk)) if kind in (ReportKind.ANNEX_IV, ReportKind.DPIA) else ()
        said = _generate(world, kind, out, *extra)
        run = ReportRun.objects.filter(kind=kind, state="done").order_by("-pk").first()
        assert run is not None and str(run.report_id) in said
        assert f"recorded in ledger entry {run.ledger_index}" in said
        assert Entry.objects.get(index=run.ledger_index).action == "report.generated"
        pages = _pages(out)
        assert not any("DRAFT" in page for page in pages), kind
        assert "not configured" not in "".join(pages)
        # Poppler's pdfsig (NSS) validates the signature as a reader would; pyHanko (report verify) agrees.
        pdfsig = subprocess.run(["pdfsig", str(out)], capture_output=True, text=True, check=False).stdout
        assert "Signature Validation: Signature is Valid." in pdfsig, (kind, pdfsig)
        verified = _verify(out)
        claims = int(verified.rsplit(" claims borne out", 1)[0].rsplit(" ", 1)[-1])
        assert claims > 0, (kind, verified)
        assert len(_png(out, kind)) == len(pages)
        written[kind] = "".join(pages)

    art30 = " ".join(written[ReportKind.RECORDS_OF_PROCESSING].split())
    erased = f"assistant/tickets v{world['version'].number}"
    assert "ERASED" in art30 and erased in art30
    assert f"helpdesk v{world['trained'].number}" in art30 and f"helpdesk v{world['child'].number}" in art30
    assert f"built on helpdesk v{world['trained'].number}" in art30  # inherits the data through its base
    assert "helpdesk-eu (staging" in art30 and "helpdesk-child (staging" in art30
    assert PROFILE["controller_name"] in art30 and PROFILE["supervisory_authority_name"] in art30

    annex = " ".join(written[ReportKind.ANNEX_IV].split())
    positions = [annex.find(point) for point in ANNEX_IV_POINTS]
    assert all(p >= 0 for p in positions), [p for p, at in zip(ANNEX_IV_POINTS, positions, strict=True) if at < 0]
    assert positions == sorted(positions)
    assert "Drafts answers to support tickets" in annex  # the intended purpose
    assert PROFILE["controller_name"] in annex  # the provider
    assert "not trained by this service" in annex  # registered from a folder: no method is invented
    assert "every 7 days" in annex and "every 30 days" in annex  # the profiles' re-scan periods
    assert "every 0 days" not in annex

    dpia = " ".join(written[ReportKind.DPIA].split())
    assert "likelihood" in dpia and "severity" in dpia
    assert "each was reviewed by a data steward" not in dpia

    # The same world (dear to build) serves two more stories.
    _a_report_edited_and_signed_again_fails_verify_naming_the_fact(world)
    _admin_form_offers_the_model_versions_by_name(world)


def _a_report_edited_and_signed_again_fails_verify_naming_the_fact(world: dict[str, Any]) -> None:
    """An embedded claim changed, the PDF signed again with the service's own key: the signature
    holds, the checkpoint holds, and ``report verify`` names the claim the ledger contradicts."""
    from audits.reports.services import report_generate, report_request

    day = world["trained"].created_at.date()
    run = report_request(actor=world["compliance_officer"], kind=ReportKind.ANNEX_IV, model_version=world["trained"],
                         period_start=day, period_end=day)  # fmt: skip
    run = report_generate(report_pk=run.pk)
    assert run is not None and run.state == "done", run.error if run else "not claimed"
    checkpoint = latest_checkpoint()
    report = builders.build(run, checkpoint=checkpoint, progress=lambda *_: None)
    assert report.claims
    honest = sign_report_pdf(build_pdf(report), reason="test", signed_at=report.generated_at)
    assert report_verify(honest).ok
    target = next(c for c in report.claims if c.field == "subject.digest")
    forged_value = "sha256:" + "0" * 64
    claims = [dataclasses.replace(c, value=forged_value) if c is target else c for c in report.claims]
    forged = sign_report_pdf(build_pdf(dataclasses.replace(report, claims=tuple(claims))), reason="test",
                             signed_at=report.generated_at)  # fmt: skip
    check = report_verify(forged)
    assert not check.ok
    assert target.fact in check.reason and forged_value in check.reason and target.field in check.reason
    assert [c.value for c in read_pdf(forged).claims if c.fact == target.fact] == [forged_value]


def test_report_generate_refuses_bad_input_and_changes_nothing(people: dict[str, Any], tmp_path: Path) -> None:
    before = ReportRun.objects.count()
    cases = [
        (["records_of_processing", "--as", "nobody"], "--as: no active user 'nobody'"),
        (["records_of_processing", "--as", "data-steward", "--project", "assistant"], "refused: reports need"),
        (["records_of_processing", "--as", "compliance-officer", "--project", "nope"], "--project: no project"),
        (["annex_iv", "--as", "compliance-officer", "--project", "assistant"], "model_version"),
        (["governance_audit", "--as", "compliance-officer", "--from", "yesterday"], "not a date"),
    ]
    for arguments, message in cases:
        with pytest.raises(CommandError, match=message.replace("(", r"\(")):
            call_command("report", "generate", *arguments, "--out", str(tmp_path / "x.pdf"))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("report", "generate", "governance_audit", "--as", "compliance-officer", "--project", "assistant",
                     "--out", str(tmp_path / "missing" / "x.pdf"))  # fmt: skip
    assert ReportRun.objects.count() == before
    assert not (tmp_path / "x.pdf").exists()


def _admin_form_offers_the_model_versions_by_name(world: dict[str, Any]) -> None:
    """No ids to look up: the form lists the project's model versions by name, and the report
    asked for from it documents the version chosen."""
    from django.test import Client

    from common.testing import admin_login

    client = Client()
    admin_login(client, world["compliance_officer"])
    url = "/admin/reports/reportrun/generate/"
    trained = world["trained"]
    assert f"assistant / helpdesk v{trained.number} (Helpdesk)" in client.get(url).content.decode()
    day = trained.created_at.date().isoformat()
    form = {"kind": "annex_iv", "project": world["project"].pk, "period_start": day, "period_end": day}
    before = ReportRun.objects.count()
    refused = client.post(url, form).content.decode()
    assert "documents one model version: choose one" in refused and ReportRun.objects.count() == before
    assert client.post(url, {**form, "model_version": trained.pk}).status_code == 302
    assert ReportRun.objects.order_by("-pk").first().model_version_id == trained.pk
