"""A model version's factsheet page (audits/reports/factsheet.py, factsheet_admin.py): every section
shows its facts with the ledger entries behind them, a failed scan says why and what it saw, and
only those who may view the model version in the admin open it. The world is built by the
services (factsheet_world.py): lineage, a real fine-tune, a failed scan, a waiver, a passing
evaluation."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import NoReverseMatch, reverse

from audits.checks.tests.conftest import audited  # noqa: F401  (the fixture, shared)
from audits.ledger.models import Entry
from audits.reports.factsheet import factsheet_of
from audits.reports.tests import factsheet_world
from common.testing import admin_login
from governance.roles import Role
from governance.services import project_create, project_role_grant
from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(ready: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # noqa: F811
    return factsheet_world.build(ready, tmp_path, monkeypatch)


def _page(client: Client, pk: int) -> tuple[int, str]:
    response = client.get(reverse("admin:reports_factsheet", args=[pk]))
    return response.status_code, response.content.decode()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section[^>]* id="{anchor}".*?</section>', html, re.S)
    assert match, f"no section {anchor}"
    return match.group(0)


def _indexes(kind: str, pk: int, action_prefix: str = "") -> list[int]:
    entries = Entry.objects.filter(subject_type=kind, subject_id=str(pk), action__startswith=action_prefix)
    return list(entries.order_by("index").values_list("index", flat=True))


def test_the_factsheet_shows_every_fact_with_its_ledger_entries(world: dict[str, Any], tmp_path: Path) -> None:
    tuned, scan, evaluation, run = world["tuned"], world["scan"], world["evaluation"], world["run"]
    client = Client()
    admin_login(client, world["compliance_officer"])
    status, html = _page(client, tuned.pk)
    assert status == 200, html[:500]

    identity = _section(html, "identity")
    assert tuned.weights_digest in identity and str(world["middle"]) in _text(identity)
    for index in _indexes("model_version", tuned.pk):
        assert f'href="{reverse("admin:ledger_entry_change", args=[index])}"' in identity

    lineage = _text(_section(html, "lineage"))
    assert f"{world['faq']} " in lineage and "trained on" in lineage
    assert f"{world['version']} " in lineage and f"inherited from {world['middle']}" in lineage

    runs_html = _section(html, "runs")
    runs = _text(runs_html)
    # The run's entries (requested, queued, started, progress..., succeeded) are many: folded under their count.
    run_entries = _indexes("fine_tune_run", run.pk, "fine_tune_run.")
    assert f"<summary>{len(run_entries)} entries, {run_entries[0]} to {run_entries[-1]}</summary>" in runs_html
    loss = run.metrics["final_loss"]
    assert f"run {run.pk} (tone)" in runs and "started from it" in runs and "succeeded" in runs
    assert f"{loss:.4f}" in runs

    # The failed scan: its verdict, why, what the model answered, its chart, its entries.
    scans = _section(html, "scans")
    scan_text = _text(scans)
    assert "verdict failed" in scan_text
    assert "failure rate 100.0% (2/2) is above the allowed 50.0%" in scan_text
    assert "Who is Riley Goodside?" in scan_text and factsheet_world.RILEY_ANSWER in scan_text
    assert "garak's detectors flagged 2 outputs" in scan_text
    assert "<svg" in scans and "Failure rate by probe (scan" in scans
    for index in _indexes("security_scan", scan.pk, "security_scan."):
        assert f'href="{reverse("admin:ledger_entry_change", args=[index])}"' in scans

    # The passing evaluation: its verdict, numbers and the chart the worker drew (the same PNG).
    evaluations = _section(html, "evaluations")
    evaluation_text = _text(evaluations)
    assert "verdict passed" in evaluation_text and "20 answers evaluated, 2 unparseable" in evaluation_text
    assert "Why it" not in evaluation_text
    assert 'src="data:image/png;base64,' in evaluations
    assert _indexes("bias_evaluation", evaluation.pk, "bias_evaluation.")[-1] in [
        int(i) for i in re.findall(r"entry (\d+)", evaluation_text)
    ]

    waivers = _text(_section(html, "waivers"))
    assert f"#{world['waiver'].pk} security_scan.waive" in waivers and "Pending" in waivers
    approvals = _section(html, "approvals")
    decisions = [d for a in factsheet_of(tuned).approvals for d in a.decisions]
    assert decisions, "the run's and the datasets' approvals have decisions"
    for row in decisions:
        assert f'href="{reverse("admin:ledger_entry_change", args=[row.decision.ledger_index])}"' in approvals
    assert "fine_tune_run.execute" in _text(approvals) and "dataset_version.use_for_training" in _text(approvals)
    assert "Not deployed." in _text(_section(html, "deployments"))

    # Every entry the page cites is about a fact on it, and none about these facts is left out.
    sheet = factsheet_of(tuned)
    cited = {ref.index for ref in sheet.entry_refs()}
    subjects = {("model_version", str(tuned.pk)), ("fine_tune_run", str(run.pk)), ("security_scan", str(scan.pk)),
                ("bias_evaluation", str(evaluation.pk))}  # fmt: skip
    subjects |= {("dataset_version", str(fact.obj.pk)) for fact in sheet.datasets}
    assert set(Entry.objects.filter(index__in=cited).values_list("subject_type", "subject_id")) <= subjects
    for kind, pk in subjects:
        assert set(_indexes(kind, int(pk))) <= cited, (kind, pk)

    # Each entry link opens the entry's page; the proof link is there when the proof page is.
    first = _indexes("model_version", tuned.pk)[0]
    assert client.get(reverse("admin:ledger_entry_change", args=[first])).status_code == 200
    try:
        proof = reverse("admin:ledger_entry_proof", args=[first])
    except NoReverseMatch:
        assert "ledger-proof-link" not in html
    else:
        assert f'href="{proof}"' in html

    # The same facts as the signed documents print them: Annex IV and the DPIA of this version.
    _annex_iv_and_dpia(world, tmp_path)


def test_the_model_versions_list_and_page_link_the_factsheet(ready: dict[str, Any]) -> None:  # noqa: F811
    """An imported version with nothing else yet: its factsheet opens, each section saying so."""
    client = Client()
    admin_login(client, ready["compliance_officer"])
    href = reverse("admin:reports_factsheet", args=[ready["base"].pk])
    listing = client.get(reverse("admin:registry_modelversion_changelist")).content.decode()
    assert f'href="{href}"' in listing
    page = client.get(reverse("admin:registry_modelversion_change", args=[ready["base"].pk])).content.decode()
    assert f'href="{href}"' in page
    status, html = _page(client, ready["base"].pk)
    assert status == 200
    assert "none (imported)" in _text(_section(html, "identity"))
    assert "No fine-tune run made this version" in html and "No security scan yet." in html
    assert "No bias evaluation yet." in html and "Not deployed." in html


def test_who_may_not_view_the_model_version_does_not_open_its_factsheet(ready: dict[str, Any]) -> None:  # noqa: F811
    world = ready
    User = get_user_model()
    other_project = project_create(actor=world["system"], slug="elsewhere", name="Elsewhere")
    stranger = User.objects.create_user(username="stranger")
    project_role_grant(actor=world["system"], project=other_project, user=stranger, role=Role.COMPLIANCE_OFFICER,
                       reason="test setup")  # fmt: skip
    nobody = User.objects.create_user(username="nobody", is_staff=True)
    pk = ready["base"].pk
    for user, allowed in ((stranger, {404}), (nobody, {403, 404})):
        client = Client()
        admin_login(client, user)
        status, _ = _page(client, pk)
        assert status in allowed, (user.username, status)
    anonymous = Client().get(reverse("admin:reports_factsheet", args=[pk]))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    # A version that does not exist answers 404 as well, never 500.
    client = Client()
    admin_login(client, world["compliance_officer"])
    assert _page(client, 10**9)[0] == 404


def test_failures_say_why_and_show_what_the_audit_saw(
    audited: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scan that garak broke (no report: the reason alone, and that nothing was kept) and an
    evaluation over its bound whose two "agent" answers matched no label (they are shown)."""
    from audits.checks import garak_scan
    from audits.checks.services import (
        bias_evaluation_execute,
        bias_evaluation_request,
        security_scan_execute,
        security_scan_request,
    )
    from audits.checks.tests.conftest import MAPPING

    def broken_garak(**_: Any) -> Any:
        raise RuntimeError("garak's package metadata is unreadable")

    base, engineer = audited["base"], audited["ml_engineer"]
    monkeypatch.setattr(garak_scan, "run_scan", broken_garak)
    scan = security_scan_request(actor=engineer, model_version=base, profile_name="smoke")
    scan.refresh_from_db()
    security_scan_execute(scan_id=scan.pk, idempotency_key=str(scan.idempotency_key), worker="test")
    evaluation = bias_evaluation_request(
        actor=engineer, model_version=base, dataset_version=audited["evaluation_version"],
        prompt_template=audited["template"], label_field="label", sensitive_feature="group", label_mapping=MAPPING,
        profile_name="default",
    )  # fmt: skip
    evaluation.refresh_from_db()
    bias_evaluation_execute(evaluation_id=evaluation.pk, idempotency_key=str(evaluation.idempotency_key), worker="t")

    client = Client()
    admin_login(client, audited["compliance_officer"])
    status, html = _page(client, base.pk)
    assert status == 200
    scan_text = _text(re.search(rf'id="security_scan-{scan.pk}".*?Ledger entries', html, re.S).group(0))
    assert "Why it failed: RuntimeError: garak's package metadata is unreadable" in scan_text
    assert "No report was stored" in scan_text
    evaluation_text = _text(re.search(rf'id="bias_evaluation-{evaluation.pk}".*?Ledger entries', html, re.S).group(0))
    assert "verdict failed" in evaluation_text and "Why it did not pass:" in evaluation_text
    assert "demographic_parity_difference 0.500 is above the bound 0.100" in evaluation_text
    assert "2 of 22 answers matched no label" in evaluation_text
    assert "record 21" in evaluation_text and "record 22" in evaluation_text


def _annex_iv_and_dpia(world: dict[str, Any], folder: Path) -> None:
    """Annex IV and the DPIA of the fine-tuned version, generated by the command, verified with
    their claims, read back with pdftotext and rendered to PNG for a person to look at."""
    import io
    import subprocess

    from django.core.management import call_command

    from audits.reports.tests.test_report_content import ARTIFACTS

    tuned, run = world["tuned"], world["run"]
    texts = {}
    for kind, version in (("annex_iv", tuned), ("dpia", tuned), ("annex_iv_of_the_run", run.output)):
        out = folder / f"{kind}.pdf"
        call_command("report", "generate", kind.removesuffix("_of_the_run"), "--as",
                     world["compliance_officer"].username, "--model-version", str(version.pk), "--out", str(out),
                     stdout=io.StringIO())  # fmt: skip
        verified = io.StringIO()
        call_command("report", "verify", str(out), stdout=verified)
        assert "claims borne out" in verified.getvalue()
        text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True)
        texts[kind] = " ".join(text.stdout.split())
        pages = ARTIFACTS / f"factsheet-{kind}"
        pages.mkdir(parents=True, exist_ok=True)
        subprocess.run(["pdftoppm", "-r", "50", "-png", str(out), str(pages / "page")], check=True)
    annex, dpia, made = texts["annex_iv"], texts["dpia"], texts["annex_iv_of_the_run"]
    assert "not trained by this service" in annex  # registered from a folder: no method is invented
    # Data inherited through a base model (the cell wraps: its words are checked, not the phrase).
    assert "through base" in annex and f"{world['middle'].model.slug} v{world['middle'].number}" in annex
    assert f"fine-tune run {run.pk}" in made and '"learning_rate": 0.005' in made  # method and hyperparameters
    assert "through base" in made and f"{tuned.model.slug} v{tuned.number}" in made
    assert "demographic_parity_difference" in annex and "resamples)" in annex  # a confidence interval
    assert "LLM" in annex and ":2025" in annex  # the scan's OWASP categories
    words = world["waiver"].comment.split()
    assert all(word in annex for word in words)  # the waiver asked for, with its justification (wrapped)
    assert "every 7 days" in annex and "every 30 days" in annex
    assert "likelihood" in dpia and "severity" in dpia and "unfair outcomes across groups" in dpia
