"""The auditor's walk in a real browser, from sign-in to an inclusion proof checked offline: no API
call, no shell step. Chromium driven by Playwright against the live server.

The auditor signs in with a password and enrols an authenticator, searches the ledger for the
entry a real service wrote (a project created), opens it, opens its inclusion proof (verified on
the page against the signed checkpoint), sees that an entry appended after that checkpoint has no
proof yet, and downloads the proof file. The test then checks the file with the offline verifier,
as the auditor would (``python -m audits.verify FILE --key …`` in a process that cannot import
Django), and checks that a tampered copy fails. Screenshots and accessibility checks of every page:
tests/browser.py.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.models import Entry
from audits.ledger.services import checkpoint_create
from audits.ledger.verification import known_verifiers
from conftest import ROOT
from governance.services import organisation_auditor_grant, project_create
from tests.browser import PASSWORD, browser, require_chromium, sign_in_first_time

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("embedded")]


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _offline(path: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    """The offline verifier on ``path``, in a process where importing Django fails."""
    args = [arg for key in keys for arg in ("--key", key)]
    program = (
        "import runpy, sys; sys.modules['django'] = None; "
        f"sys.argv = ['audits.verify', {str(path)!r}] + {args!r}; "
        "runpy.run_module('audits.verify', run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_auditor_finds_an_entry_and_verifies_its_inclusion_proof_offline(
    people: dict[str, Any], live_server: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    auditor = people["auditor"]
    assert auditor.is_staff  # the role grant made them staff
    auditor.set_password(PASSWORD)
    auditor.save()
    # An auditor of the organisation: they read the entries of the projects made below too (a
    # project's auditor reads that project's entries only: tests/test_ledger_admin.py).
    organisation_auditor_grant(actor=people["system"], user=auditor, reason="the external audit")
    project_create(actor=people["system"], slug="fraud-screening", name="Fraud screening")
    entry = Entry.objects.get(action="project.created", subject_id="fraud-screening")
    checkpoint = checkpoint_create()
    assert checkpoint is not None and checkpoint.tree_size > entry.index
    project_create(actor=people["system"], slug="churn-forecast", name="Churn forecast")
    later = Entry.objects.get(action="project.created", subject_id="churn-forecast")
    assert later.index >= checkpoint.tree_size  # appended after the checkpoint: no proof yet
    keys = [key.encode() for key in known_verifiers()]

    with browser(live_server.url, "auditor-inclusion-proof") as pages:
        page = pages.page
        sign_in_first_time(pages, auditor.username)

        # The ledger's entries, searched for the project's creation.
        page.click("#content-main a[href='/admin/ledger/entry/']")
        page.wait_for_selector("#result_list")
        page.fill("#searchbar", "fraud-screening")
        page.press("#searchbar", "Enter")
        page.wait_for_url("**/admin/ledger/entry/?q=fraud-screening")
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("project.created")
        pages.shot("ledger-search")

        # The entry, then its inclusion proof, verified on the page.
        rows.first.locator(f"a[href*='/ledger/entry/{entry.index}/change/']").click()
        page.wait_for_selector("text=Inclusion proof of entry")
        expect(page.locator("#content-main")).to_contain_text("fraud-screening")
        pages.shot("entry")
        page.click(f"a[href='/admin/ledger/entry/{entry.index}/proof/']")
        expect(page.locator("#proof-verified")).to_contain_text(
            f"This entry is included in the checkpoint of tree size {checkpoint.tree_size} signed by key"
        )
        expect(page.locator("#proof-verified")).to_contain_text("verified.")
        expect(page.locator("#proof-note")).to_have_text(checkpoint.note.rstrip("\n"))
        assert page.locator("#proof-path tbody tr").count() >= 1
        command = page.inner_text("#proof-command")
        assert command.startswith(f"ledger-verify ledger-entry-{entry.index}-proof.json --key '")
        pages.shot("proof")
        page.emulate_media(color_scheme="dark")  # the admin's dark theme: the same page must stay readable
        pages.shot("proof-dark")
        page.emulate_media(color_scheme="light")

        # The file, downloaded as the auditor does, with its own name.
        with page.expect_download() as info:
            page.click("#proof-file")
        download = info.value
        assert download.suggested_filename == f"ledger-entry-{entry.index}-proof.json"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)

        # An entry appended after the checkpoint: the page says so and when the next is due.
        pages.goto(f"/admin/ledger/entry/{later.index}/proof/")
        expect(page.locator("#proof-not-covered")).to_contain_text(
            f"The latest signed checkpoint covers entries 0 to {checkpoint.tree_size - 1}"
        )
        expect(page.locator("#proof-next-due")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "))
        pages.shot("proof-not-yet")

        # A mistyped index: a plain page saying there is no such entry.
        response = page.goto(f"{pages.base_url}/admin/ledger/entry/{later.index + 1000}/proof/")
        assert response is not None and response.status == 404
        expect(page.locator("#proof-missing")).to_contain_text(
            f"The ledger has no entry with index {later.index + 1000}"
        )
        pages.shot("proof-unknown")

    # The auditor's offline check, with the key the page named pinned: the file verifies...
    pinned = command.split("--key '", 1)[1].rstrip("'")
    assert pinned in keys
    honest = _offline(saved, pinned)
    assert honest.returncode == 0, honest.stderr
    assert honest.stdout.startswith(
        f"OK entry {entry.index} is included in the checkpoint of tree size {checkpoint.tree_size} signed by"
    )
    # ...and a copy whose entry says something else does not.
    document = json.loads(saved.read_text())
    assert document["entry"]["subject"]["id"] == "fraud-screening"
    body = base64.b64decode(document["body_b64"]).replace(b"fraud-screening", b"fraud-screenin9")
    document["body_b64"] = base64.b64encode(body).decode()
    document["entry"] = json.loads(body)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    failed = _offline(tampered, pinned)
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"FAIL entry {entry.index}: ")
    assert pages.names() == [
        "01-login.png",
        "02-mfa-enrol.png",
        "03-mfa-enrolled.png",
        "04-home.png",
        "05-ledger-search.png",
        "06-entry.png",
        "07-proof.png",
        "08-proof-dark.png",
        "09-proof-not-yet.png",
        "10-proof-unknown.png",
    ]
