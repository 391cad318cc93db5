"""The compliance officer's admin in a real browser: Chromium driven by Playwright against the
live server, with a real Celery worker behind it.

The officer signs in with a password and enrols an authenticator (the code computed here from
the secret the page shows), approves a pending request in the inbox with a reason, finds the
decision in the ledger browser, generates a governance report, waits for it in the list and
downloads a PDF that ``report verify`` accepts. Screenshots and accessibility checks of every
page: tests/browser.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from audits.reports.models import ReportRun, ReportState
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState
from governance.services import approval_request_decide, approval_request_submit
from registry.models import PiiScan, ScanStatus
from registry.services import dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset
from tests.browser import PASSWORD, browser, require_chromium, sign_in_first_time

REASON = "reviewed the scan and the digest; fine for the tone fine-tune"

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("embedded")]


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _pending_request(people: dict[str, Any]) -> ApprovalRequest:
    """A high-risk dataset version submitted for training, through the services: the shipped
    policy asks a data steward and a compliance officer; the steward has filled their slot, so the
    officer's approval is the one that approves it."""
    dataset = make_dataset(people, slug="tickets")
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename="tickets.jsonl",
        data=b'{"text": "the parcel arrived and the customer was satisfied"}\n',
    )  # fmt: skip
    # The upload also queued the scan for the worker: whoever claims it first runs it.
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    deadline = time.monotonic() + 120
    while (scan := PiiScan.objects.get(version=version)).status not in (ScanStatus.SUCCEEDED, ScanStatus.FAILED):
        assert time.monotonic() < deadline, "the PII scan did not finish"
        time.sleep(0.2)
    assert scan.status == ScanStatus.SUCCEEDED, scan.error
    request = approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training", context={"risk_tier": "high"}, comment="for the tone fine-tune",
    )  # fmt: skip
    assert [slot["role"] for slot in request.rule["approvals"]] == ["data_steward", "compliance_officer"]
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="clean")
    request.refresh_from_db()
    assert request.state == ApprovalState.PENDING
    return request


def test_officer_signs_in_with_mfa_approves_sees_the_ledger_and_downloads_a_report(
    people: dict[str, Any], celery_worker_process: subprocess.Popen[bytes], live_server: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    officer = people["compliance_officer"]
    assert officer.is_staff  # the role grant made them staff
    officer.set_password(PASSWORD)
    officer.save()
    approval = _pending_request(people)
    project_pk, username, subject_id = people["project"].pk, officer.username, approval.subject_id
    today = timezone.now().date()
    started = time.monotonic()

    with browser(live_server.url, "compliance-officer-report") as pages:
        page = pages.page

        # 1. Password, then enrolment of an authenticator (the first sign-in).
        sign_in_first_time(pages, username)
        expect(page.locator("#content-main")).to_contain_text("Approval requests")
        # Every link the officer sees on the index leads to a page (the session's cookies go along).
        hrefs = page.eval_on_selector_all("a[href^='/']", "links => links.map(a => a.getAttribute('href'))")
        broken = {
            href: status for href in set(hrefs) if (status := page.request.get(pages.base_url + href).status) >= 400
        }
        assert len(hrefs) > 10 and not broken, broken

        # 2. The inbox: the pending request, read, then approved with a reason.
        page.click("#content-main a[href='/admin/governance/approvalrequest/']")
        page.wait_for_selector("#result_list")
        link = f"a[href$='/approvalrequest/{approval.pk}/change/']"
        row = page.locator("#result_list tbody tr", has=page.locator(link))
        expect(row.locator("td.field-state")).to_have_text("Pending")
        expect(row.locator("td.field-asks")).to_have_text("use for training: assistant/tickets v1")
        pages.shot("inbox")
        row.locator(link).click()
        page.wait_for_selector("text=for the tone fine-tune")
        expect(page.locator("#content-main")).to_contain_text(approval.subject_digest)
        pages.shot("request")
        page.go_back()
        page.wait_for_selector("#result_list")
        row.locator("input.action-select").check()
        page.select_option("select[name=action]", "approve_selected")
        page.fill("input[name=reason]", REASON)
        page.click("#changelist-form button[name=index]")
        expect(page.locator("ul.messagelist")).to_contain_text("Approved 1 request(s).")
        # The inbox shows what waits for the officer: the approved request has left it; "All" shows it.
        expect(row).to_have_count(0)
        page.click("#changelist-filter a[href='?waiting=all']")
        page.wait_for_selector("#result_list")
        # The list's links now carry the filter (?_changelist_filters=...).
        row = page.locator("#result_list tbody tr", has=page.locator(link.replace("$=", "*=")))
        expect(row.locator("td.field-state")).to_have_text("Approved")
        pages.shot("inbox-approved")

        # 3. The ledger browser: the decision's entry, found by its action, opened.
        pages.goto("/admin/ledger/entry/")
        page.wait_for_selector("#result_list")
        page.fill("#searchbar", "approval.approved")
        page.press("#searchbar", "Enter")
        entry_row = page.locator("#result_list tbody tr", has_text="approval.approved")
        expect(entry_row).to_have_count(1)
        expect(entry_row).to_contain_text(username)
        expect(entry_row.locator("td.field-subject_id")).to_have_text(subject_id)
        pages.shot("ledger")
        entry_row.locator("th a").click()
        page.wait_for_selector("div.field-decoded pre")
        entry_path = urlsplit(page.url).path
        entry = json.loads(page.inner_text("div.field-decoded pre"))
        pages.shot("ledger-entry")

        # 4. A governance report for the project, this month: generated on the worker, downloaded.
        pages.goto("/admin/reports/reportrun/")
        page.click("#generate-link")
        page.wait_for_selector("form#generate-report")
        page.select_option("select[name=kind]", "governance_audit")
        page.select_option("select[name=project]", str(project_pk))
        assert page.input_value("input[name=period_start]") == today.replace(day=1).isoformat()
        assert page.input_value("input[name=period_end]") == today.isoformat()
        pages.shot("report-generate")
        page.click("form#generate-report [name=generate]")
        expect(page.locator("ul.messagelist")).to_contain_text("queued")
        pages.shot("report-queued")
        download_link = page.locator("#result_list a.report-download")
        deadline = time.monotonic() + 120
        while not download_link.count():  # the list shows the progress; the officer reloads it
            progress = page.inner_text("#result_list td.field-progress_bar")
            assert "failed" not in progress and time.monotonic() < deadline, f"report not done: {progress}"
            page.wait_for_timeout(500)
            page.reload()
            page.wait_for_selector("#result_list")
        expect(page.locator("#result_list td.field-progress_bar progress")).to_have_attribute("value", "100")
        pages.shot("report-done")
        with page.expect_download() as downloading:
            download_link.click()
        download = downloading.value
        pdf = tmp_path / download.suggested_filename
        download.save_as(pdf)
    browser_seconds = time.monotonic() - started

    assert pages.names() == [
        "01-login.png", "02-mfa-enrol.png", "03-mfa-enrolled.png", "04-home.png", "05-inbox.png",
        "06-request.png", "07-inbox-approved.png", "08-ledger.png", "09-ledger-entry.png",
        "10-report-generate.png", "11-report-queued.png", "12-report-done.png",
    ]  # fmt: skip
    # What the pages showed is what the database holds.
    approval.refresh_from_db()
    assert approval.state == ApprovalState.APPROVED
    decision = ApprovalDecision.objects.get(request=approval, approver=officer)
    assert decision.reason == REASON and decision.role == "compliance_officer"
    assert entry_path == f"/admin/ledger/entry/{decision.ledger_index}/change/"
    assert entry["action"] == "approval.approved" and entry["payload"]["reason"] == REASON
    assert entry["subject"] == {"type": "dataset_version", "id": subject_id, "digest": approval.subject_digest}
    assert Entry.objects.get(index=decision.ledger_index).action == "approval.approved"
    # The download is the report the worker made, and it verifies.
    run = ReportRun.objects.get()
    assert run.state == ReportState.DONE and run.requested_by == officer
    assert pdf.name == f"governance_audit-{run.report_id}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and hashlib.sha256(pdf.read_bytes()).hexdigest() == run.pdf_sha256
    out = io.StringIO()
    call_command("report", "verify", str(pdf), stdout=out)
    assert "verified" in out.getvalue()
    print(f"the officer's walk through the admin took {browser_seconds:.1f} s in the browser")
