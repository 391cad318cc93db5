"""Data-subject requests end to end in a real browser: Chromium driven by Playwright against the
live server, the services behind every button, a real Celery worker behind the services.

Before the browser opens, the test plants a person's e-mail in a dataset version (uploaded and
scanned through the services), registers a model version trained on it and requests a deployment
of that, and registers an incident whose description names her. A compliance officer then signs in for the first time (password and authenticator).
First a GDPR access request: filed, identity verified, searched, its package downloaded and the
request completed. Then a CCPA request to delete (the erasure kind with a confirmation of
receipt): filed, receipt confirmed, identity verified, searched, what was found reviewed, the
erasure's confirmation page read (the exact list of changes, the incident among them), the
reference typed, erased, the state "Erased" with what the erasure did (her address blanked in the
incident), completed. The worker scans the version the erasure
left. An auditor's short walk shows the same pages without a button. Afterwards the database and
the ledger must agree with what the pages said.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.utils import timezone

from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.services import ERASED, vault_open
from audits.privacy.models import DataSubjectRequest, ModelReview, RequestState
from audits.privacy.services import package_sha256
from audits.privacy.tests.planting import ANA, CONTACTS, planted_version, scan, trained_and_deployed
from common.artifacts import read_blob
from registry.models import DatasetVersion, DataSubjectIndexEntry, PiiScan, ScanStatus
from tests.browser import PASSWORD, browser, require_chromium, sign_in_first_time

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.one_pass("scale")]

LIST = "/admin/privacy/datasubjectrequest/"
TZ = "America/Los_Angeles"


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before the test builds anything


def _ledger(pk: int) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="data_subject_request", subject_id=str(pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def _file(pages: Any, project_pk: int, regime: str, kind: str, channel: str, tz: str, received: Any) -> int:
    """File a request for Ana on the add page, from the list; the request's page is shown after."""
    from playwright.sync_api import expect

    page = pages.page
    pages.goto(LIST)
    page.wait_for_selector("#changelist")
    page.click("a.addlink")
    page.wait_for_selector("form#receive-request")
    page.select_option("select[name=project]", str(project_pk))
    page.select_option("select[name=regime]", regime)
    page.select_option("select[name=kind]", kind)
    page.select_option("select[name=channel]", channel)
    page.select_option("select[name=tz]", tz)
    page.fill("input[name=received_at]", received.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=email]", ANA)
    if kind == "delete":
        pages.shot("file-request")
    page.click("form#receive-request [name=receive]")
    expect(page.locator("ul.messagelist")).to_contain_text("filed: received")
    assert "Received" in page.inner_text("#dsr-request tr:has(th:text-is('State'))")
    return int(re.search(r"/datasubjectrequest/(\d+)/change/", page.url).group(1))  # type: ignore[union-attr]


def _access_walk(pages: Any, project_pk: int, contacts: DatasetVersion, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """A GDPR access request from filing to completion, the package downloaded on the way."""
    from playwright.sync_api import expect

    page = pages.page
    received = (timezone.now() - timedelta(hours=1)).astimezone(ZoneInfo("Europe/Berlin"))
    pk = _file(pages, project_pk, "gdpr", "access", "email", "Europe/Berlin", received)
    ref = f"DSR-{pk}"
    expect(page.locator("h1")).to_contain_text(f"{ref}: GDPR access (GDPR Art. 15)")
    page.fill("#step-verify-identity textarea[name=method]", "reply from the address on file")
    page.click("#step-verify-identity [type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: identity verified")
    page.click("#step-search [type=submit]")
    expect(page.locator("#found-versions tbody tr")).to_contain_text(str(contacts))
    expect(page.locator("#step-complete")).to_have_count(0)  # the package comes first
    pages.shot("access-searched")
    with page.expect_download() as downloading:
        page.click("#step-access-package [type=submit]")
    download = downloading.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    page.reload()
    seen = {
        "filename": download.suggested_filename,
        "package": json.loads(saved.read_text()),
        "package_fact": page.inner_text("#dsr-request tr:has(th:text-is('Access package')) td"),
        "state_searched": page.inner_text("#dsr-request tr:has(th:text-is('State')) td"),
    }
    page.fill("#step-complete textarea[name=nature]", "package sent by e-mail")
    page.click("#step-complete [type=submit]")
    expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: completed (package sent by e-mail)")
    expect(page.locator("#dsr-actions")).to_have_count(0)
    seen["state_completed"] = page.inner_text("#dsr-request tr:has(th:text-is('State')) td")
    pages.shot("access-completed")
    return pk, seen


def test_an_officer_answers_an_access_and_an_erasure_request_in_the_browser(
    people: dict[str, Any],
    celery_worker_process: subprocess.Popen[bytes],
    live_server: Any,
    tmp_path: Path,
    settings: Any,
) -> None:
    from playwright.sync_api import expect

    from serving.server import TranscriptLog
    from serving.services.preference import deployment_transcripts, transcript_path

    settings.SERVING_ROOT = tmp_path / "serving"  # the deployments' folders are this test's own

    officer = people["compliance_officer"]
    officer.set_password(PASSWORD)
    officer.save()
    contacts = planted_version(people, "contacts")
    model_version, deployment = trained_and_deployed(people, contacts)
    assert contacts.pii_verdict == "found" and contacts.record_count == len(CONTACTS)
    from incidents.services import incident_register

    incident = incident_register(
        actor=people["ml_engineer"], project=people["project"], title="Invoice sent to the wrong customer",
        description=f"The assistant sent {ANA}'s invoice to another customer.",
        aware_at=timezone.now() - timedelta(hours=3),
    )  # fmt: skip
    # Her deployment kept a conversation that names her (written by the model server's own writer).
    turn = str(uuid.uuid4())
    TranscriptLog(transcript_path(deployment)).write({
        "time": "2026-12-08T09:00:00.000Z", "request_id": turn, "deployment": deployment.pk,
        "prompt": f"I am {ANA}: where is my refund?", "completion": "It was sent on Monday.",
    })  # fmt: skip
    received = (timezone.now() - timedelta(hours=2)).astimezone(ZoneInfo(TZ))
    project_pk, username = people["project"].pk, officer.username
    seen: dict[str, str] = {}
    started = time.monotonic()

    with browser(live_server.url, "data-subject-erasure") as pages:
        page = pages.page
        sign_in_first_time(pages, username)
        expect(page.locator("#content-main a[href='/admin/privacy/datasubjectrequest/']")).to_have_count(1)

        # 1. An access request, answered with its package.
        access_pk, access = _access_walk(pages, project_pk, contacts, tmp_path)

        # 2. The request to delete, filed on the add page.
        pk = _file(pages, project_pk, "ccpa", "delete", "web_form", TZ, received)
        ref = f"DSR-{pk}"
        expect(page.locator("h1")).to_contain_text(f"{ref}: CCPA right to delete")
        seen["received"] = page.inner_text("#dsr-request tr:has(th:text-is('Received')) td")
        seen["respond"] = page.inner_text("#dsr-request tr:has(th:text-is('Respond')) td")
        assert ANA not in page.content()  # sealed: the page shows the kinds and keyed hashes only
        pages.shot("request-filed")

        # 3. Confirm receipt, verify the identity, search.
        page.click("#step-confirm-receipt [type=submit]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: receipt confirmed")
        page.fill("#step-verify-identity textarea[name=method]", "reply from the address on file")
        page.click("#step-verify-identity [type=submit]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: identity verified")
        page.click("#step-search [type=submit]")
        expect(page.locator("ul.messagelist")).to_contain_text("1 dataset version(s) of project assistant hold")
        found = page.locator("#found-versions tbody tr")
        expect(found).to_have_count(1)
        expect(found).to_contain_text(str(contacts))
        seen["found_version"] = found.inner_text()
        seen["found_model"] = page.inner_text("#found-models tbody tr")
        seen["found_deployment"] = page.inner_text("#found-deployments tbody tr")
        seen["found_incident"] = page.inner_text("#found-incidents tbody tr")
        seen["found_transcripts"] = page.inner_text("#found-transcripts tbody tr")
        pages.shot("searched")

        # 4. The confirmation page: exactly what the erasure will change.
        page.click("#step-erase [type=submit]")
        page.wait_for_selector("form#erase-confirm")
        seen["plan_version"] = page.inner_text("#plan-versions tbody tr")
        seen["plan_review"] = page.inner_text("#plan-reviews tbody tr")
        seen["plan_deployment"] = page.inner_text("#plan-deployments tbody tr")
        seen["plan_keys"] = page.inner_text("#plan-keys")
        seen["plan_incident"] = page.inner_text("#plan-incidents tbody tr")
        seen["plan_transcripts"] = page.inner_text("#plan-transcripts tbody tr")
        pages.shot("erase-confirm")
        page.fill("input[name=reference]", "DSR-0")
        page.click("input[name=erase]")
        expect(page.locator("#erase-confirm")).to_contain_text(f"type {ref} exactly; nothing was erased")
        page.fill("input[name=reference]", ref)
        page.click("input[name=erase]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: erased: 1 dataset version(s) replaced")
        seen["state_erased"] = page.inner_text("#dsr-request tr:has(th:text-is('State')) td")
        seen["erased_version"] = page.inner_text("#erasure-versions tbody tr")
        seen["erased_review"] = page.inner_text("#erasure-reviews tbody tr")
        seen["erased_incident"] = page.inner_text("#erasure-incidents tbody tr")
        seen["erased_transcripts"] = page.inner_text("#erasure-transcripts tbody tr")
        seen["found_after"] = page.inner_text("#found-versions tbody tr")
        pages.shot("erased")
        page.emulate_media(color_scheme="dark")
        pages.shot("erased-dark")
        page.emulate_media(color_scheme="light")

        # 5. Complete the request.
        page.fill("#step-complete textarea[name=nature]", "told the requester by e-mail that the data was erased")
        page.click("#step-complete [type=submit]")
        expect(page.locator("ul.messagelist")).to_contain_text(f"{ref}: completed")
        expect(page.locator("#dsr-actions")).to_have_count(0)
        seen["state_completed"] = page.inner_text("#dsr-request tr:has(th:text-is('State')) td")
        seen["ledger"] = page.inner_text("#dsr-ledger tbody")
        pages.shot("completed")
        page.goto(live_server.url + LIST)
        row = page.locator("#result_list tbody tr", has_text=ref)
        expect(row.locator("td.field-state")).to_have_text("Completed")
        seen["list_row"] = row.inner_text()
        pages.shot("list")
    print(f"the officer's erasure walk took {time.monotonic() - started:.1f} s in the browser")

    assert pages.names() == [
        "01-login.png", "02-mfa-enrol.png", "03-mfa-enrolled.png", "04-home.png", "05-access-searched.png",
        "06-access-completed.png", "07-file-request.png", "08-request-filed.png", "09-searched.png",
        "10-erase-confirm.png", "11-erased.png", "12-erased-dark.png", "13-completed.png", "14-list.png",
    ]  # fmt: skip
    # The access request: the file downloaded is the package the ledger records.
    answered = DataSubjectRequest.objects.get(pk=access_pk)
    assert access["filename"] == f"access-package-DSR-{access_pk}.json"
    assert package_sha256(access["package"]) == answered.package_sha256
    assert [(v["id"], v["records"]) for v in access["package"]["dataset_versions"]] == [(contacts.pk, 1)]
    assert ANA in access["package"]["records"][0]["fields"]["text"]
    assert answered.package_sha256 in access["package_fact"]
    assert access["state_searched"].startswith("Searched: the access package was issued")
    assert access["state_completed"].startswith("Completed") and answered.state == RequestState.COMPLETED
    assert _ledger(access_pk) == [
        "data_subject_request.received", "data_subject_request.identity_verified", "data_subject_request.searched",
        "data_subject_request.access_package_issued", "data_subject_request.completed",
    ]  # fmt: skip
    # What the pages said is what the database and the ledger hold.
    request = DataSubjectRequest.objects.get(pk=pk)
    assert (request.regime, request.kind, request.channel, request.tz) == ("ccpa", "delete", "web_form", TZ)
    assert request.received_at == received.replace(second=0, microsecond=0)
    local_received = request.received_at.astimezone(ZoneInfo(TZ))
    assert seen["received"].startswith(f"{local_received.day} {local_received:%b %Y, %H:%M} {TZ}")
    local_due = request.respond_by.astimezone(ZoneInfo(TZ))
    assert seen["respond"].startswith(f"due {local_due.day} {local_due:%b %Y}, 23:59 {TZ} — 4")  # 44 or 45 days left
    assert request.state == RequestState.COMPLETED and request.erased_at is not None
    assert request.receipt_confirmed_at and request.verification_method == "reply from the address on file"
    assert request.response_nature == "told the requester by e-mail that the data was erased"
    assert _ledger(pk) == [
        "data_subject_request.received", "data_subject_request.receipt_confirmed",
        "data_subject_request.identity_verified", "data_subject_request.searched", "data_subject_request.erased",
        "data_subject_request.completed",
    ]  # fmt: skip
    entries = Entry.objects.filter(subject_type="data_subject_request", subject_id=str(pk)).order_by("index")
    assert [line.split("\t")[0] for line in seen["ledger"].splitlines()] == [str(e.index) for e in entries]
    assert [line.split("\t")[2] for line in seen["ledger"].splitlines()] == _ledger(pk)

    contacts.refresh_from_db()
    new = DatasetVersion.objects.get(parent=contacts)
    review = ModelReview.objects.get(request=request)
    assert contacts.erased_at is not None and new.record_count == len(CONTACTS) - 1
    assert request.erasure["replaced"] == [{"old": contacts.pk, "new": new.pk, "records_removed": 1}]
    assert review.model_version == model_version and review.closed_at is None
    # The confirmation page listed exactly what happened.
    assert seen["plan_version"].split("\t")[:5] == [
        str(contacts),
        str(contacts.pk),
        str(len(CONTACTS)),
        "1",
        str(len(CONTACTS) - 1),
    ]
    assert seen["plan_review"].split("\t")[:3] == [str(model_version), str(model_version.pk), str(contacts.pk)]
    assert seen["plan_deployment"].split("\t")[:3] == [deployment.name, str(deployment.pk), "staging"]
    # This request's key and that of the person's access request, closed before the erasure.
    assert "2 vault key(s) shredded" in seen["plan_keys"] and "1 earlier closed request(s)" in seen["plan_keys"]
    assert seen["erased_version"].split("\t") == [
        f"{contacts} (id {contacts.pk})",
        f"{new} (id {new.pk}), scanned again",
        "1",
    ]
    assert seen["erased_review"].split("\t") == [f"review {review.pk}", str(model_version), "open"]
    # The incident naming her: found by the search, listed for erasure, her address blanked.
    assert seen["found_incident"].split("\t") == ["INC-1", str(incident.pk), "description"]
    assert seen["plan_incident"].split("\t") == ["INC-1", str(incident.pk), "open", "description"]
    assert seen["erased_incident"].split("\t") == ["INC-1", "description"]
    incident.refresh_from_db()
    assert incident.description == "The assistant sent [erased]'s invoice to another customer."
    assert request.erasure["incidents"] == [{"id": incident.pk, "reference": "INC-1", "fields": ["description"]}]
    # The conversation naming her: counted by the search, listed for erasure, erased.
    assert seen["found_transcripts"].split("\t") == [deployment.name, str(deployment.pk), "1"]
    assert seen["plan_transcripts"].split("\t") == [
        deployment.name,
        str(deployment.pk),
        "requested (waiting for approval)",
        "1",
    ]
    assert seen["erased_transcripts"].split("\t") == [deployment.name, str(deployment.pk), "1"]
    assert deployment_transcripts(deployment) == {}  # her only turn is erased
    assert ANA not in transcript_path(deployment).read_text() and turn in transcript_path(deployment).read_text()
    assert seen["found_after"].endswith(f"erased; replaced by {new} (id {new.pk})")
    assert seen["state_erased"].startswith("Erased: the person's data is gone")
    assert seen["state_completed"].startswith("Completed")
    assert ref in seen["list_row"] and "answered" in seen["list_row"]
    assert DataSubjectKey.objects.get(ref=request.subject_ref).key is None
    assert vault_open(request.identifiers_sealed) == ERASED
    assert vault_open(answered.identifiers_sealed) == ERASED
    # The worker scans the version the erasure left: the person is gone from it, others remain.
    finished = time.monotonic() + 180
    while (rescan := PiiScan.objects.filter(version=new).latest("pk")).status not in (
        ScanStatus.SUCCEEDED,
        ScanStatus.FAILED,
    ):
        assert time.monotonic() < finished, "the worker did not scan the version the erasure left"
        time.sleep(0.5)
    new.refresh_from_db()
    assert rescan.status == ScanStatus.SUCCEEDED, rescan.error
    kept = read_blob(new.sha256).decode().splitlines()
    assert json.dumps(CONTACTS[0]) not in kept and len(kept) == len(CONTACTS) - 1  # hers alone removed
    index = set(DataSubjectIndexEntry.objects.filter(version=new).values_list("key_hash", flat=True))
    assert index and not index & {h["key_hash"] for h in request.identifier_hashes}  # others indexed, not her
    out = io.StringIO()
    call_command("ledger", "verify", stdout=out)
    assert "ok" in out.getvalue().lower()


def test_an_auditor_reads_the_request_without_buttons(people: dict[str, Any], live_server: Any) -> None:
    from playwright.sync_api import expect

    from audits.privacy.services import dsr_erase, dsr_receive, dsr_search, dsr_verify_identity

    officer, auditor = people["compliance_officer"], people["auditor"]
    auditor.set_password(PASSWORD)
    auditor.save()
    contacts = planted_version(people, "contacts")
    request = dsr_receive(
        actor=officer, project=people["project"], regime="gdpr", kind="erasure", channel="email",
        received_at=timezone.now() - timedelta(days=3), identifiers=[{"kind": "email", "value": ANA}],
        tz="Europe/Berlin",
    )  # fmt: skip
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    request = dsr_erase(actor=officer, request=dsr_search(actor=officer, request=request))
    scan(DatasetVersion.objects.get(parent=contacts), people["system"])  # the successor's scan, done before reading
    before, contacts_name = Entry.objects.count(), str(contacts)  # no query while the browser's loop runs

    with browser(live_server.url, "data-subject-auditor") as pages:
        page = pages.page
        sign_in_first_time(pages, auditor.username)
        pages.goto(LIST)
        page.wait_for_selector("#result_list")
        expect(page.locator("a.addlink")).to_have_count(0)
        expect(page.locator("select[name=action]")).to_have_count(0)
        expect(page.locator("#result_list td.field-state")).to_have_text("Erased")
        pages.shot("auditor-list")
        page.click(f"#result_list a:text-is('DSR-{request.pk}')")
        page.wait_for_selector("#dsr-request")
        expect(page.locator("#dsr-read-only")).to_be_visible()
        expect(page.locator("#dsr-actions")).to_have_count(0)
        expect(page.locator("#content-main form")).to_have_count(0)
        expect(page.locator("#erasure-versions")).to_contain_text(contacts_name)
        pages.shot("auditor-request")
        pages.goto(f"{LIST}{request.pk}/erase/")
        expect(page.locator("ul.messagelist")).to_contain_text("preparing an erasure needs the compliance_officer role")
        pages.shot("auditor-erase-refused")

    assert pages.names()[-3:] == ["05-auditor-list.png", "06-auditor-request.png", "07-auditor-erase-refused.png"]
    # Reading changed nothing: the only entries since are the auditor's own sign-in (the authenticator enrolled).
    assert not Entry.objects.filter(index__gte=before, subject_type="data_subject_request").exists()
    assert {e.subject_type for e in Entry.objects.filter(index__gte=before)} <= {"user"}
    assert DataSubjectRequest.objects.get(pk=request.pk).state == RequestState.ERASED
