"""A model version's factsheet in a real browser: Chromium driven by Playwright against the live
server.

The compliance officer signs in for the first time (password, then an authenticator), opens the
model versions' list, follows the factsheet link of a fine-tuned version, reads its sections (the
inherited dataset, the run's final loss, the failed scan's reason and the answers it saw, the
passing evaluation's chart, the waiver and the approvals), follows a ledger entry link to the
entry's page and its inclusion proof, and comes back through the version's own page. The same
factsheet is screenshotted in dark mode. The world is built by the services before the browser
opens (audits/reports/tests/factsheet_world.py). Screenshots and accessibility checks:
tests/browser.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from audits.ledger.services import checkpoint_create
from audits.reports.tests import factsheet_world
from tests.browser import PASSWORD, Pages, browser, require_chromium, sign_in_first_time
from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("scale")]

WIDTH = 1280


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _fits(pages: Pages, what: str) -> None:
    """The page needs no horizontal scrolling at the walk's width."""
    width = pages.page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{what} is {width} px wide at a {WIDTH} px window"


def test_officer_reads_a_model_versions_factsheet_and_follows_its_ledger_entries(
    ready: dict[str, Any],  # noqa: F811
    live_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect

    # The session's Celery worker, when an earlier test started it, sees this test's committed rows
    # and would claim the world's jobs (and run the real garak where the world stands one in): they
    # go to a queue no worker reads, and run here, in process, as the world builds them.
    queues = {name: "factsheet-world" for name in ("TRAINING_CPU_QUEUE", "TRAINING_GPU_QUEUE", "PII_SCAN_QUEUE")}
    with override_settings(**queues):
        world = factsheet_world.build(ready, tmp_path, monkeypatch)
    checkpoint_create()  # so the inclusion proofs the page links have a signed tree to prove against
    officer = world["compliance_officer"]
    officer.set_password(PASSWORD)
    officer.save()
    tuned, scan, run = world["tuned"], world["scan"], world["run"]
    username, version_label, middle_label, tuned_pk = officer.username, str(tuned), str(world["middle"]), tuned.pk
    inherited_label, loss = str(world["version"]), f"{run.metrics['final_loss']:.4f}"
    scan_entries = Entry.objects.filter(subject_type="security_scan", subject_id=str(scan.pk))
    scan_entry = scan_entries.filter(action="security_scan.completed").get().index

    with browser(live_server.url, "factsheet") as pages:
        page = pages.page
        sign_in_first_time(pages, username)

        # 1. The model versions' list: each row links its factsheet.
        pages.goto("/admin/registry/modelversion/")
        page.wait_for_selector("#changelist")
        _fits(pages, "the model versions' list")
        pages.shot("model-versions")
        page.locator(f"#result_list a.factsheet-link[href$='/factsheet/{tuned_pk}/']").click()

        # 2. The factsheet, section by section.
        expect(page.locator("h1")).to_have_text(f"Factsheet of {version_label}")
        expect(page.locator("#weights-digest")).to_have_text(tuned.weights_digest)
        lineage = page.locator("#lineage tr.dataset-row", has_text=inherited_label)
        expect(lineage).to_contain_text(f"inherited from {middle_label}")
        expect(page.locator("#runs tr.run-row")).to_contain_text(loss)
        failed = page.locator(f"#security_scan-{scan.pk}")
        expect(failed.locator(".verdict")).to_have_text("failed")
        expect(failed.locator(".why-reasons")).to_contain_text("failure rate 100.0% (2/2) is above the allowed 50.0%")
        expect(failed.locator("table.seen")).to_contain_text(factsheet_world.RILEY_ANSWER)
        expect(failed.locator(".chart svg")).to_be_visible()
        passed = page.locator(f"#bias_evaluation-{world['evaluation'].pk}")
        expect(passed.locator(".verdict")).to_have_text("passed")
        expect(passed.locator(".chart img")).to_be_visible()
        assert passed.locator(".chart img").evaluate("img => img.naturalWidth") > 100  # the PNG decoded
        expect(page.locator("#waivers tr.approval-row")).to_contain_text("security_scan.waive")
        expect(page.locator("#approvals")).to_contain_text("fine_tune_run.execute")
        expect(page.locator("#deployments")).to_contain_text("Not deployed.")
        _fits(pages, "the factsheet")
        pages.shot("factsheet")

        # 3. A ledger entry behind the failed scan: its page, then its inclusion proof.
        failed.locator(f"a.ledger-entry-link:text-is('entry {scan_entry}')").click()
        expect(page.locator("h1, h2").first).to_be_visible()
        assert page.url.endswith(f"/admin/ledger/entry/{scan_entry}/change/"), page.url
        pages.shot("ledger-entry")
        page.go_back()
        proof = failed.locator("a.ledger-proof-link").last
        if proof.count():  # the proof page exists where the ledger's admin has it (admin:ledger_entry_proof)
            proof.click()
            assert f"/admin/ledger/entry/{scan_entry}/proof/" in page.url, page.url
            pages.shot("inclusion-proof")
            page.go_back()

        # 4. The version's own page links the factsheet too.
        page.locator(".breadcrumbs a", has_text=version_label).click()
        link = page.locator(".object-tools a.factsheet-link")
        expect(link).to_have_text("Factsheet")
        pages.shot("model-version")
        link.click()
        expect(page.locator("h1")).to_have_text(f"Factsheet of {version_label}")

        # 5. The same factsheet in dark mode: the admin's theme colours, the charts on white.
        page.emulate_media(color_scheme="dark")
        page.reload()
        expect(page.locator("#scans")).to_be_visible()
        pages.shot("factsheet-dark")
