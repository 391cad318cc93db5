"""The data steward's admin in a real browser: Chromium driven by Playwright against the live
server, with a real Celery worker scanning the uploads.

The steward signs in for the first time (password, then an authenticator), registers a dataset,
has a malformed file refused, uploads a small JSONL file with an e-mail address planted in it,
watches the scan on the version's page until it finishes, opens the record behind the finding
(the address highlighted, the viewing ledgered), marks it "not personal data" (the address is the
refunds desk's published one), records the review and asks for approval to train on the version
(it waits for its approvers: no one approves their own request). A second browser context in dark
mode screenshots the same pages. Afterwards the database and the ledger must agree with what
the pages showed, and the address must be in neither. Screenshots and accessibility checks:
tests/browser.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.models import Entry
from conftest import start_celery_worker, stop_celery_worker
from governance.models import ApprovalRequest, ApprovalState
from registry.models import Dataset, DatasetVersion, FindingState, PiiFindingMark, PiiScan, Review, ScanStatus
from registry.rules import scan_findings
from tests.browser import ARTIFACTS, PASSWORD, Pages, browser, require_chromium, sign_in_first_time

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("embedded")]

ADDRESS = "refunds@acme-support.com"
RECORDS = [
    {"question": "How do I reset the router?", "answer": "Hold the reset button for ten seconds."},
    {"question": "Who answers refund questions?", "answer": f"Write to {ADDRESS}; the desk answers within two days."},
    {"question": "When are invoices sent?", "answer": "On the first working day of the month."},
]
NOTE = "the refunds desk's published address, not a person's"
COMMENT = "for the FAQ fine-tune"
WIDTH = 1280
SCAN_QUEUE = "steward-walk"


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup: None) -> Iterator[subprocess.Popen[bytes]]:
    """This walk's worker scans with Presidio's pattern recognizers for e-mail addresses only: a
    scan takes a second rather than loading a spaCy pipeline. The settings reach the worker as
    environment variables (settings changed in this process would not). Its scans come on a queue
    of its own (``_scans_to_this_walks_worker``): the suite's shared worker, alive once an earlier
    test started it, scans with the full pipeline and every entity type."""
    proc = start_celery_worker(
        f"{SCAN_QUEUE},default,cpu", PII_SCAN_QUEUE=SCAN_QUEUE, PII_NLP_MODEL="blank", PII_ENTITIES="EMAIL_ADDRESS",
        PII_SCAN_PROCESSES="1",
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_celery_worker(proc)


@pytest.fixture(autouse=True)
def _scans_to_this_walks_worker(settings: Any) -> None:
    settings.PII_SCAN_QUEUE = SCAN_QUEUE  # where the live server sends the uploads' scans


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _fits(pages: Pages, what: str) -> None:
    """The page needs no horizontal scrolling at the walk's width, and neither does a list's own
    scrolling box (the admin hides columns past its edge there, out of sight)."""
    width = pages.page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{what} is {width} px wide at a {WIDTH} px window"
    hidden = pages.page.evaluate(
        "[...document.querySelectorAll('#changelist .results')].map(e => e.scrollWidth - e.clientWidth)"
    )
    assert all(extra <= 1 for extra in hidden), f"{what}: the list is {hidden} px wider than its box"


def test_steward_registers_uploads_reviews_and_requests_approval_in_the_browser(
    people: dict[str, Any], celery_worker_process: subprocess.Popen[bytes], live_server: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    steward, project = people["data_steward"], people["project"]
    steward.set_password(PASSWORD)
    steward.save()
    good = tmp_path / "faq.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    broken = tmp_path / "faq-draft.jsonl"
    broken.write_text(json.dumps(RECORDS[0]) + "\n{question: unquoted}\n")
    start = Entry.objects.count()
    username, project_label = steward.username, str(project)

    with browser(live_server.url, "data-steward") as pages:
        page = pages.page
        sign_in_first_time(pages, username)

        # 1. Register a dataset.
        page.click("#content-main a[href='/admin/registry/dataset/']")
        page.wait_for_selector("#changelist")
        pages.shot("datasets")
        page.click("a.addlink[href='/admin/registry/dataset/add/']")
        page.wait_for_selector("form#register-dataset")
        page.select_option("select[name=project]", label=project_label)
        page.fill("input[name=slug]", "faq-answers")
        page.fill("input[name=name]", "FAQ answers")
        page.fill("textarea[name=purpose]", "fine-tune the support assistant")
        page.select_option("select[name=lawful_basis]", "legitimate_interests")
        page.fill("input[name=retention_days]", "365")
        page.fill("input[name=source]", "the public support FAQ")
        page.fill("textarea[name=data_subject_categories]", "customers\nsupport staff")
        page.fill("textarea[name=personal_data_categories]", "contact details")
        pages.shot("register")
        page.click("form#register-dataset [name=register]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"Registered {project_label}/faq-answers.")
        expect(page.locator("div.field-data_subject_categories_shown ul.readable li")).to_have_text(
            ["customers", "support staff"]
        )
        # The list sits where the other values start (the admin would indent a form's lists by 170 px).
        listed = page.locator("div.field-data_subject_categories_shown ul.readable").bounding_box()
        other = page.locator("div.field-source .readonly").bounding_box()
        assert abs(listed["x"] - other["x"]) < 30, (listed, other)

        # 2. Upload: a malformed file is refused by name and line; the good one becomes v1.
        page.set_input_files("#upload-form input[name=file]", str(broken))
        page.click("#upload-form [name=upload]")
        # (The admin capitalises a message's first letter.)
        expect(page.locator("ul.messagelist li.error")).to_have_text("Faq-draft.jsonl: line 2: not JSON "
                                                                     "(Expecting property name enclosed in double "
                                                                     "quotes at column 2)")  # fmt: skip
        expect(page.locator("#dataset-versions")).to_contain_text("No version yet.")
        pages.shot("upload-refused")
        page.set_input_files("#upload-form input[name=file]", str(good))
        page.click("#upload-form [name=upload]")
        expect(page.locator("ul.messagelist")).to_contain_text("Uploaded faq.jsonl as")
        version_id = int(re.search(r"/datasetversion/(\d+)/change/", page.url).group(1))
        pages.shot("version-uploaded")

        # 3. The scan, watched on the page (it reloads itself until the scan has finished).
        expect(page.locator("#pii-scan")).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(page.locator("#pii-scan progress")).to_have_attribute("value", "3")
        row = page.locator("#findings-table tbody tr", has_text="EMAIL_ADDRESS").first
        expect(row.locator("td.finding-state")).to_have_text("unmarked")
        assert ADDRESS not in page.content()  # locations only until the steward asks
        expect(page.locator("#version-use")).to_contain_text("may not be used")
        _fits(pages, "the version's page")
        pages.shot("version-scanned")

        # 4. The record behind the finding, its span highlighted; then the mark and the review.
        finding_id = row.get_attribute("id")
        row.locator("button.preview-button").click()
        expect(page.locator("mark#flagged")).to_have_text(ADDRESS)
        expect(page.locator("#record-preview")).to_contain_text("Who answers refund questions?")
        expect(page.locator("#viewing-recorded")).to_contain_text("Your viewing is recorded in the ledger")
        _fits(pages, "the finding's page")
        pages.shot("finding-preview")
        page.click("#finding-mark button[value=false_positive]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"Finding {finding_id.split('-')[1]} marked not "
                                                               "personal data.")  # fmt: skip
        expect(page.locator(f"#{finding_id} td.finding-state")).to_contain_text("not personal data")
        page.check("#review-form input[name=decision][value=false_positive]")
        page.fill("#review-form textarea[name=note]", NOTE)
        pages.shot("review")
        page.click("#review-form [name=review]")
        expect(page.locator("ul.messagelist")).to_contain_text("recorded: false_positive; it may be used")
        expect(page.locator("#version-use")).to_contain_text("may be used")
        pages.shot("reviewed")

        # 5. The steward asks to use the version for training; the request waits for its approvers.
        page.fill("#submit-form input[name=comment]", COMMENT)
        page.click("#submit-form [name=submit]")
        expect(page.locator("ul.messagelist")).to_contain_text("opened: it waits for")
        expect(page.locator("#version-approvals td.approval-state")).to_have_text("pending")
        expect(page.locator("#submit-form")).to_have_count(0)  # one open request at a time
        _fits(pages, "the version's page")
        pages.shot("approval-requested")

        # 6. The lists fit the window; the "usable" column reads as words, not a letter per line.
        pages.goto("/admin/registry/datasetversion/")
        usable = page.locator("#result_list td.field-usable").first
        expect(usable).to_contain_text("yes")
        assert usable.bounding_box()["width"] > 150, usable.bounding_box()
        _fits(pages, "the versions list")
        pages.shot("versions")
        pages.goto("/admin/registry/dataset/")
        _fits(pages, "the datasets list")
        pages.shot("datasets-after")

        # 7. Dark mode: the same session in a second context that prefers a dark scheme.
        context = page.context
        dark_context = context.browser.new_context(
            color_scheme="dark", viewport={"width": WIDTH, "height": 900}, storage_state=context.storage_state()
        )
        dark_folder = ARTIFACTS / "data-steward-dark"
        dark_folder.mkdir(parents=True, exist_ok=True)
        for old in dark_folder.glob("*.png"):
            old.unlink()
        dark = Pages(dark_context.new_page(), live_server.url, dark_folder)
        try:
            dark.goto("/admin/registry/datasetversion/")
            dark.page.wait_for_selector("#result_list")
            background = dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(18, 18, 18)", background  # the admin's dark theme
            dark.shot("versions")
            dark.goto(f"/admin/registry/datasetversion/{version_id}/change/")
            dark.page.wait_for_selector("#findings-table")
            dark.shot("version")
            dark.page.locator(f"#{finding_id} button.preview-button").click()
            expect(dark.page.locator("mark#flagged")).to_have_text(ADDRESS)
            dark.shot("finding-preview")
        finally:
            pages.violations += dark.violations
            dark_context.close()

    assert pages.names() == [
        "01-login.png", "02-mfa-enrol.png", "03-mfa-enrolled.png", "04-home.png", "05-datasets.png",
        "06-register.png", "07-upload-refused.png", "08-version-uploaded.png", "09-version-scanned.png",
        "10-finding-preview.png", "11-review.png", "12-reviewed.png", "13-approval-requested.png", "14-versions.png",
        "15-datasets-after.png",
    ]  # fmt: skip
    assert dark.names() == ["01-versions.png", "02-version.png", "03-finding-preview.png"]

    # What the pages showed is what the database holds ...
    dataset = Dataset.objects.get(slug="faq-answers")
    assert (dataset.project, dataset.data_steward) == (project, steward)
    version = DatasetVersion.objects.get(dataset=dataset)  # the malformed file left no version
    assert version.pk == version_id and version.record_count == 3
    assert (version.review, version.reviewed_by, version.review_note) == (Review.FALSE_POSITIVE, steward, NOTE)
    scan = PiiScan.objects.get(version=version)
    assert scan.status == ScanStatus.SUCCEEDED
    number = int(finding_id.split("-")[1])
    finding = scan_findings(scan.findings)[number - 1]
    assert (finding.entity, finding.record, finding.field) == ("EMAIL_ADDRESS", 2, "answer")
    mark = PiiFindingMark.objects.get(scan=scan)
    assert (mark.finding, mark.state, mark.marked_by) == (number, FindingState.FALSE_POSITIVE, steward)
    approval = ApprovalRequest.objects.get(subject_type="dataset_version", subject_id=str(version_id))
    assert (approval.state, approval.requester, approval.comment) == (ApprovalState.PENDING, steward, COMMENT)
    assert approval.action == "dataset_version.use_for_training"

    # ... and what the ledger recorded, in order, by whom; the address is in no entry.
    entries = [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=start).order_by("index")]
    about_version = [
        (e["action"], e["actor"]["name"])
        for e in entries
        if e["subject"] and e["subject"]["type"] == "dataset_version" and e["subject"]["id"] == str(version_id)
    ]
    assert about_version == [
        ("dataset_version.registered", username),
        ("pii_scan.requested", username),
        ("pii_scan.succeeded", "system"),
        ("pii_finding.viewed", username),
        ("pii_finding.marked", username),
        ("dataset_version.reviewed", username),
        ("approval.requested", username),
        ("pii_finding.viewed", username),  # the look in dark mode
    ], about_version
    viewed = [e for e in entries if e["action"] == "pii_finding.viewed"]
    assert all(e["payload"] == {"scan": scan.pk, "finding": number, "entity": "EMAIL_ADDRESS", "record": 2,
                                "start": finding.start, "end": finding.end} for e in viewed)  # fmt: skip
    created = [e for e in entries if e["action"] == "dataset.created"]
    assert [(e["subject"]["id"], e["actor"]["name"]) for e in created] == [(str(dataset.pk), username)]
    (requested,) = [e for e in entries if e["action"] == "approval.requested"]
    assert requested["subject"]["digest"] == approval.subject_digest
    assert not Entry.objects.filter(body__contains=ADDRESS.encode()).exists()
