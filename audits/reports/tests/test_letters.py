"""The data subject's letter: a real access request, a person found in a real (scanned) dataset
with a model trained on it and deployed; the letter issued, its signature verified, its annex read
back and compared with the ledgered digest, its words read with pdftotext, its pages rendered."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.ledger.models import Entry
from audits.privacy.models import RequestState
from audits.privacy.services import (
    dsr_access_package,
    dsr_complete,
    dsr_letter_record,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
    package_sha256,
)
from audits.privacy.tests.planting import ANA, planted_version, trained_and_deployed
from audits.reports.letters import PACKAGE_FILENAME, access_letter_issue
from audits.reports.pdf import read_attachment, read_pdf, verify_pdf_signature
from audits.reports.services import report_verify, trusted_certificates
from audits.reports.tests.test_report_content import ARTIFACTS
from common.errors import Conflict, DomainError
from common.testing import admin_login

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def organisation(people: dict[str, Any]) -> None:
    """The organisation profile the letters name, set by a global admin through its service."""
    from governance.services.organisation import organisation_profile_update

    organisation_profile_update(
        actor=people["system"], controller_name="Example Assistants Ltd", controller_address="1 Quay Street, Dublin",
        controller_email="privacy@example.com", dpo_name="Dana Data", dpo_contact="dpo@example.com",
        representative_not_required_reason="the controller is established in the Union (Art. 27(1))",
        supervisory_authority_name="Data Protection Commission", security_measures="role-based access; a signed ledger",
    )  # fmt: skip


def _searched(people: dict[str, Any], regime: str, kind: str) -> Any:
    officer = people["compliance_officer"]
    request = dsr_receive(
        actor=officer, project=people["project"], regime=regime, kind=kind, channel="email",
        received_at=timezone.now(), identifiers=[{"kind": "email", "value": ANA}], tz="Europe/Dublin",
    )  # fmt: skip
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    return dsr_search(actor=officer, request=request)


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    source = tmp_path / "letter.pdf"
    source.write_bytes(pdf)
    done = subprocess.run(["pdftotext", "-layout", str(source), "-"], capture_output=True, check=True, timeout=60)
    return " ".join(done.stdout.decode().split())


@pytest.fixture
def found(people: dict[str, Any]) -> dict[str, Any]:
    """Ana in one scanned dataset version, a model version registered as trained on it, and a
    staging deployment of that model requested."""
    version = planted_version(people, "contacts")
    model_version, deployment = trained_and_deployed(people, version)
    return {**people, "version": version, "model_version": model_version, "deployment": deployment}


def test_the_access_letter_is_signed_embeds_the_package_and_speaks_plainly(
    found: dict[str, Any], tmp_path: Path
) -> None:
    officer = found["compliance_officer"]
    request = _searched(found, "gdpr", "access")

    letter = access_letter_issue(actor=officer, request=request)

    check = verify_pdf_signature(letter.pdf, trusted=trusted_certificates())
    assert check.ok, check.reason
    assert letter.sha256 == hashlib.sha256(letter.pdf).hexdigest()
    annex = read_attachment(letter.pdf, PACKAGE_FILENAME)
    assert annex is not None
    package = json.loads(annex)
    assert package == letter.package and package_sha256(package) == letter.package_sha256
    assert [r["record"] for r in package["records"]] == [1] and ANA in json.dumps(package["records"])
    # The ledger holds both digests: the package's as issued, the letter's beside it.
    request.refresh_from_db()
    assert request.package_sha256 == letter.package_sha256 and request.letter_sha256 == letter.sha256
    issued = Entry.objects.filter(subject_id=str(request.pk), action="data_subject_request.access_package_issued")
    assert json.loads(bytes(issued.get().body))["payload"]["sha256"] == letter.package_sha256
    recorded = json.loads(bytes(Entry.objects.get(action="data_subject_request.letter_issued").body))["payload"]
    assert recorded == {"sha256": letter.sha256, "package_sha256": letter.package_sha256, "letter": "access_letter"}
    info = read_pdf(letter.pdf)
    assert info.kind == "access_letter" and [c.entry for c in info.claims] == [issued.get().index]
    assert report_verify(letter.pdf).ok  # signature, checkpoint and the cited entry, as for any report

    words = _pdftotext(letter.pdf, tmp_path)
    version, model_version, deployment = found["version"], found["model_version"], found["deployment"]
    for needed in (
        "Dear requester",
        "Article 15 of the GDPR",
        "Example Assistants Ltd",
        "Dana Data, dpo@example.com",
        str(version.dataset),  # what we hold, and where
        "Yes: 1 record in 1 dataset",
        "e-mail address",
        version.dataset.purpose,  # why, and on which basis
        "our legitimate interests (GDPR Art. 6(1)(f))",
        "Who receives it",
        "How long we keep it",
        "Where it came from",
        "European Economic Area",
        str(model_version.model),  # the model trained on it, and where it runs
        deployment.name,
        "staging",
        "Please call me back",  # the record itself (the table of records)
        "lodging a complaint with a supervisory authority",  # rights, and how to complain
        "GDPR Art. 77",
        "Decisions made by computer",
        "solely on automated processing",
        "Yours sincerely, Example Assistants Ltd",
        PACKAGE_FILENAME,
        letter.package_sha256[:32],
    ):
        assert needed in words, needed

    # The letter comes first (its first page speaks to the person); how to check it comes last.
    first_page = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(tmp_path / "letter.pdf"), "-"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "Dear requester" in first_page and "Signed checkpoint" not in first_page
    assert "About this document" in words and "Signed checkpoint" in words
    pages = ARTIFACTS / "access-letter"  # kept for a person to look at
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir(parents=True)
    (tmp_path / "letter.pdf").write_bytes(letter.pdf)
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(tmp_path / "letter.pdf"), str(pages / "p")], check=True,
                   timeout=120)  # fmt: skip
    assert len(list(pages.glob("p-*.png"))) >= 2


def test_a_ccpa_know_letter_names_the_agency_and_completes_the_request(found: dict[str, Any], tmp_path: Path) -> None:
    officer = found["compliance_officer"]
    request = _searched(found, "ccpa", "know")
    letter = access_letter_issue(actor=officer, request=request)
    assert verify_pdf_signature(letter.pdf, trusted=trusted_certificates()).ok
    assert read_pdf(letter.pdf).kind == "know_letter" and letter.filename == f"know-letter-{request.reference}.pdf"
    words = _pdftotext(letter.pdf, tmp_path)
    for needed in ("California Consumer Privacy Act", "California Privacy Protection Agency", "§1798.121",
                   "not to be discriminated against", "outside the United States", "privacy@example.com"):  # fmt: skip
        assert needed in words, needed
    assert "Our legal basis" not in words and "data protection officer" not in words
    # The letter issued the package: the request can be completed.
    done = dsr_complete(actor=officer, request=request, nature="letter sent by e-mail")
    assert done.state == RequestState.COMPLETED

    # Someone we hold nothing about is told so, plainly, with their rights.
    stranger = dsr_receive(
        actor=officer, project=found["project"], regime="ccpa", kind="know", channel="email",
        received_at=timezone.now(), identifiers=[{"kind": "email", "value": "nobody@elsewhere.example"}],
    )  # fmt: skip
    stranger = dsr_search(actor=officer, request=dsr_verify_identity(actor=officer, request=stranger, method="reply"))
    nothing = access_letter_issue(actor=officer, request=stranger)
    assert nothing.package["data_held"] is False
    words = _pdftotext(nothing.pdf, tmp_path)
    assert "No. We found no personal data about you." in words and "Your rights" in words
    assert "What we hold about you" not in words


def test_the_letter_lists_the_incident_reports_that_name_the_person(found: dict[str, Any], tmp_path: Path) -> None:
    """Before, a person named only in an incident report was told "No. We found no personal data
    about you." while the annex held the report's text."""
    from datetime import timedelta

    from incidents.services import incident_register

    officer = found["compliance_officer"]
    named = incident_register(
        actor=found["ml_engineer"], project=found["project"], title="Invoice shown to the wrong customer",
        description=f"{ANA} and bo.lim@example.net were shown each other's invoices for an hour.",
        aware_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    letter = access_letter_issue(actor=officer, request=_searched(found, "gdpr", "access"))
    assert [i["reference"] for i in letter.package["incidents"]] == [named.reference]
    words = _pdftotext(letter.pdf, tmp_path)
    for needed in (
        "Yes: 1 record in 1 dataset and 1 incident report.",
        "Incident reports that mention you",
        "We also found you in our register of incidents",
        f"{named.reference} Description {ANA} and bo.lim@example.net were shown",
        str(found["version"].dataset),
    ):
        assert needed in words, needed
    assert "Invoice shown to the wrong customer" not in words  # the title does not name her
    pages = ARTIFACTS / "access-letter-incident"  # kept for a person to look at
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir(parents=True)
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(tmp_path / "letter.pdf"), str(pages / "p")], check=True,
                   timeout=120)  # fmt: skip

    # Someone named in the report only: found there, and nowhere else.
    bo = dsr_receive(
        actor=officer, project=found["project"], regime="gdpr", kind="access", channel="email",
        received_at=timezone.now(), identifiers=[{"kind": "email", "value": "BO.LIM@example.net"}],
    )  # fmt: skip
    bo = dsr_search(actor=officer, request=dsr_verify_identity(actor=officer, request=bo, method="reply"))
    only = access_letter_issue(actor=officer, request=bo)
    assert only.package["data_held"] is True and only.package["records"] == []
    words = _pdftotext(only.pdf, tmp_path)
    assert "Yes: 1 incident report." in words and "We found you in our register of incidents" in words
    assert "found no personal data" not in words and "What we hold about you" not in words
    assert verify_pdf_signature(only.pdf, trusted=trusted_certificates()).ok


def test_the_letter_is_refused_clearly_and_records_nothing(found: dict[str, Any]) -> None:
    officer = found["compliance_officer"]
    early = dsr_receive(
        actor=officer, project=found["project"], regime="gdpr", kind="access", channel="email",
        received_at=timezone.now(), identifiers=[{"kind": "email", "value": ANA}],
    )  # fmt: skip
    with pytest.raises(Conflict, match="is received; an access package needs it searched"):
        access_letter_issue(actor=officer, request=early)
    erasure = _searched(found, "gdpr", "erasure")
    with pytest.raises(Conflict, match="an access package answers an access or know request, not erasure"):
        access_letter_issue(actor=officer, request=erasure)
    with pytest.raises(DomainError, match="compliance_officer"):
        access_letter_issue(actor=found["auditor"], request=_searched(found, "gdpr", "access"))
    assert not Entry.objects.filter(action="data_subject_request.letter_issued").exists()
    # The letter must embed the package issued last.
    request = _searched(found, "gdpr", "access")
    _, digest = dsr_access_package(actor=officer, request=request)
    with pytest.raises(Conflict, match="issue the letter again"):
        dsr_letter_record(actor=officer, request=request, sha256="a" * 64, package_sha256="b" * 64, letter_kind="x")
    with pytest.raises(DomainError, match="sha256: a SHA-256"):
        dsr_letter_record(actor=officer, request=request, sha256="nope", package_sha256=digest, letter_kind="x")
    assert not Entry.objects.filter(action="data_subject_request.letter_issued").exists()


def test_the_api_answers_the_signed_pdf_or_a_clear_error(found: dict[str, Any]) -> None:
    from governance.services import api_token_create

    def auth(user: Any) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}

    client, officer = Client(), found["compliance_officer"]
    request = _searched(found, "gdpr", "access")
    url = f"/api/v1/privacy/requests/{request.pk}/access-letter"
    answer = client.post(url, **auth(officer))
    assert answer.status_code == 200 and answer["Content-Type"] == "application/pdf"
    assert answer["X-Letter-SHA256"] == hashlib.sha256(answer.content).hexdigest()
    assert verify_pdf_signature(answer.content, trusted=trusted_certificates()).ok
    assert client.post(url, **auth(found["auditor"])).status_code == 403
    assert client.post(url).status_code == 401
    assert client.post("/api/v1/privacy/requests/999999/access-letter", **auth(officer)).status_code == 404
    unsearched = dsr_receive(
        actor=officer, project=found["project"], regime="ccpa", kind="opt_out", channel="email",
        received_at=timezone.now(), identifiers=[{"kind": "email", "value": ANA}],
    )  # fmt: skip
    refused = client.post(f"/api/v1/privacy/requests/{unsearched.pk}/access-letter", **auth(officer))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "wrong_kind"


def test_the_admin_step_downloads_the_letter_or_says_why_not(found: dict[str, Any]) -> None:
    browser = Client()
    admin_login(browser, found["compliance_officer"])
    request = _searched(found, "gdpr", "access")
    page = f"/admin/privacy/datasubjectrequest/{request.pk}/change/"
    body = browser.get(page).content.decode()
    assert "Issue and download the letter (PDF)" in body
    letter_page = f"/admin/privacy/datasubjectrequest/{request.pk}/letter/"
    assert 'id="step-access-letter"' in body and letter_page in body
    download = browser.post(letter_page)
    assert download.status_code == 200 and download["Content-Type"] == "application/pdf"
    assert verify_pdf_signature(download.content, trusted=trusted_certificates()).ok
    assert "Letter (PDF)" in browser.get(page).content.decode()

    erasure = _searched(found, "gdpr", "erasure")
    refused = browser.post(f"/admin/privacy/datasubjectrequest/{erasure.pk}/letter/", follow=True)
    assert refused.status_code == 200
    told = [str(m) for m in refused.context["messages"]]
    assert told == [f"{erasure.reference}: the letter was not issued: an access package answers an access or "
                    "know request, not erasure"]  # fmt: skip
    auditor = Client()
    admin_login(auditor, found["auditor"])
    assert "step-access-letter" not in auditor.get(page).content.decode()
