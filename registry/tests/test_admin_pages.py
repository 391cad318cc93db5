"""The registry's admin pages, step by step, as a data steward works through them: register a
dataset, upload a version, watch its scan, see the record behind a finding, mark findings, record
the review, ask to train on it. Each refusal is told as a message and changes nothing; the
pages call the services, so each step is checked against the rows and the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApprovalRequest, PiiListEntry
from governance.services import project_create
from registry.models import Dataset, DatasetVersion, FindingState, PiiFindingMark, PiiScan, Review, ScanStatus
from registry.services import dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db

PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
ADDRESS = "maria.garcia@example.com"
RECORDS = (
    b'{"text": "the parcel arrived on time"}\n'
    b'{"text": "please write to ' + ADDRESS.encode() + b' about the refund", "topic": "refunds"}\n'
)
DATASETS = "/admin/registry/dataset/"
VERSIONS = "/admin/registry/datasetversion/"


def _entries(since: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=since).order_by("index")]


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _signed_in(client: Client, user: Any) -> Client:
    admin_login(client, user)
    return client


def _scanned_version(people: dict[str, Any], data: bytes = RECORDS) -> DatasetVersion:
    dataset = make_dataset(people, slug=f"d{Dataset.objects.count()}")
    version, _ = dataset_version_upload(actor=people["data_steward"], dataset=dataset, filename="t.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    version.refresh_from_db()
    return version


def _preview_url(version: DatasetVersion, number: int = 1) -> str:
    scan = PiiScan.objects.get(version=version)
    return f"{VERSIONS}{version.pk}/findings/{scan.pk}/{number}/"


# --- 1. Register a dataset --------------------------------------------------------------------


FORM = {
    "slug": "faq", "name": "FAQ answers", "description": "", "purpose": "fine-tune the support assistant",
    "lawful_basis": "legitimate_interests", "retention_days": "365", "source": "support FAQ",
    "data_subject_categories": "customers\n\n support staff \n", "personal_data_categories": "contact details",
    "recipients": "", "third_country_transfers": "",
}  # fmt: skip


def test_a_steward_registers_a_dataset_in_one_of_their_projects(client: Client, people: dict[str, Any]) -> None:
    steward, project = people["data_steward"], people["project"]
    other = project_create(actor=people["system"], slug="elsewhere", name="Elsewhere")  # no role there
    _signed_in(client, steward)
    index = client.get("/admin/")
    assert f'href="{DATASETS}add/"' in index.content.decode()
    page = client.get(f"{DATASETS}add/")
    assert page.status_code == 200
    options = [str(p) for p in page.context["form"].fields["project"].queryset]
    assert options == [str(project)] and str(other) not in options
    start = Entry.objects.count()

    response = client.post(f"{DATASETS}add/", {**FORM, "project": project.pk}, follow=True)

    dataset = Dataset.objects.get(project=project, slug="faq")
    assert response.redirect_chain[-1][0] == f"{DATASETS}{dataset.pk}/change/"
    assert _messages(response) == [f"Registered {dataset}. Upload its first version below."]
    assert dataset.data_steward == steward and dataset.data_subject_categories == ["customers", "support staff"]
    assert [(e["action"], e["actor"]["name"]) for e in _entries(start)] == [("dataset.created", steward.username)]
    page = response.content.decode()
    assert 'id="upload-form"' in page and "No version yet." in page
    # The categories read as a list, not as JSON.
    assert '<ul class="readable"><li>customers</li><li>support staff</li></ul>' in page
    assert "[&quot;customers&quot;" not in page and '["customers"' not in page


def test_registration_refusals_change_nothing_and_say_why(client: Client, people: dict[str, Any]) -> None:
    make_dataset(people, slug="faq")
    _signed_in(client, people["data_steward"])
    start, datasets = Entry.objects.count(), Dataset.objects.count()
    taken = client.post(f"{DATASETS}add/", {**FORM, "project": people["project"].pk})
    assert taken.status_code == 200
    assert taken.context["form"].non_field_errors() == [f"project {people['project'].slug} already has a dataset 'faq'"]
    assert "Nothing was registered" in taken.content.decode()
    bad = client.post(f"{DATASETS}add/", {**FORM, "project": people["project"].pk, "slug": "x y",
                                          "retention_days": "0"})  # fmt: skip
    assert set(bad.context["form"].errors) == {"slug", "retention_days"}
    assert (Entry.objects.count(), Dataset.objects.count()) == (start, datasets)


def test_without_the_steward_role_there_is_no_registration(client: Client, people: dict[str, Any]) -> None:
    _signed_in(client, people["compliance_officer"])
    assert f'href="{DATASETS}add/"' not in client.get(DATASETS).content.decode()
    start = Entry.objects.count()
    response = client.post(f"{DATASETS}add/", {**FORM, "project": people["project"].pk}, follow=True)
    assert response.redirect_chain[-1][0] == DATASETS
    assert _messages(response) == ["Registering a dataset needs the data_steward role in a project."]
    assert not Dataset.objects.exists() and Entry.objects.count() == start


# --- 1. Upload a version ----------------------------------------------------------------------


def _upload(client: Client, dataset: Dataset, name: str, data: bytes) -> Any:
    return client.post(f"{DATASETS}{dataset.pk}/upload/", {"file": SimpleUploadedFile(name, data)}, follow=True)


def test_an_upload_becomes_a_version_whose_scan_is_queued(client: Client, people: dict[str, Any]) -> None:
    dataset = make_dataset(people)
    _signed_in(client, people["data_steward"])
    start = Entry.objects.count()
    response = _upload(client, dataset, "tickets.jsonl", RECORDS)
    version = DatasetVersion.objects.get(dataset=dataset)
    assert response.redirect_chain[-1][0] == f"{VERSIONS}{version.pk}/change/"
    assert _messages(response) == [f"Uploaded tickets.jsonl as {version}; its PII scan is queued."]
    assert [e["action"] for e in _entries(start)] == ["dataset_version.registered", "pii_scan.requested"]
    page = response.content.decode()
    assert 'data-status="queued"' in page and "step 1 of 3" in page and 'id="auto-refresh"' in page
    again = _upload(client, dataset, "copy.jsonl", RECORDS)
    assert _messages(again) == [f"copy.jsonl holds the same bytes as {version}: no new version."]
    assert DatasetVersion.objects.filter(dataset=dataset).count() == 1


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("t.jsonl", None, "No version uploaded: Choose a file to upload."),
        ("t.jsonl", b"", "No version uploaded: The submitted file is empty."),
        ("t.exe", b"MZ", "t.exe: unsupported file type '.exe'; supported: .csv, .jsonl, .ndjson, .parquet, .txt"),
        (
            "t.jsonl",
            b'{"text": "fine"}\n{"text": broken}\n',
            "t.jsonl: line 2: not JSON (Expecting value at column 10)",
        ),
        (
            "t.jsonl",
            b'{"text": "' + b"x" * 80 + b'"}\n',
            "t.jsonl is 93 bytes; the limit (REGISTRY_MAX_UPLOAD_BYTES) is 64",
        ),
    ],
    ids=["no-file", "empty", "unsupported", "malformed", "too-large"],
)
@override_settings(REGISTRY_MAX_UPLOAD_BYTES=64)
def test_bad_uploads_are_refused_with_a_clear_message(
    client: Client, people: dict[str, Any], name: str, data: bytes | None, message: str
) -> None:
    dataset = make_dataset(people)
    _signed_in(client, people["data_steward"])
    start = Entry.objects.count()
    payload = {} if data is None else {"file": SimpleUploadedFile(name, data)}
    response = client.post(f"{DATASETS}{dataset.pk}/upload/", payload, follow=True)
    assert response.redirect_chain[-1][0] == f"{DATASETS}{dataset.pk}/change/"
    assert _messages(response) == [message]
    assert not DatasetVersion.objects.exists() and Entry.objects.count() == start


def test_a_role_without_uploads_is_refused_by_the_service(client: Client, people: dict[str, Any]) -> None:
    dataset = make_dataset(people)
    _signed_in(client, people["compliance_officer"])
    assert 'id="upload-form"' not in client.get(f"{DATASETS}{dataset.pk}/change/").content.decode()
    response = _upload(client, dataset, "t.jsonl", RECORDS)
    assert _messages(response) == [
        f"adding a dataset version needs the data_steward or ml_engineer role in project {people['project'].slug}"
    ]
    assert not DatasetVersion.objects.exists()


# --- 2. Watch the scan --------------------------------------------------------------------------


def test_the_version_page_follows_the_scan_to_its_findings(client: Client, people: dict[str, Any]) -> None:
    dataset = make_dataset(people)
    version, _ = dataset_version_upload(actor=people["data_steward"], dataset=dataset, filename="t.jsonl", data=RECORDS)
    _signed_in(client, people["data_steward"])
    page = client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    assert 'data-status="queued"' in page and '<progress max="3" value="1"' in page and 'id="auto-refresh"' in page
    assert 'id="rescan-form"' not in page  # a scan is already on its way
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    page = client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    assert 'data-status="succeeded"' in page and '<progress max="3" value="3"' in page
    assert 'id="auto-refresh"' not in page and 'id="rescan-form"' in page
    assert "2 records scanned; verdict <strong>found</strong>" in page
    row = page.split('<tr id="finding-1">')[1].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("</td")[0] for c in row.split("<td")[1:7]]
    assert cells == ["1", "EMAIL_ADDRESS", "2", "<code>text</code>", "16&ndash;40", "1.00"]
    assert ADDRESS not in page  # locations only, until a steward asks to see the record


def test_a_second_scan_while_one_is_queued_is_refused(client: Client, people: dict[str, Any]) -> None:
    version, _ = dataset_version_upload(
        actor=people["data_steward"], dataset=make_dataset(people), filename="t.jsonl", data=RECORDS
    )
    _signed_in(client, people["data_steward"])
    response = client.post(f"{VERSIONS}{version.pk}/scan/", follow=True)
    assert _messages(response) == [f"a scan of {version} is already queued or running"]
    assert PiiScan.objects.filter(version=version).count() == 1


# --- 3. The findings: preview, marks, review -----------------------------------------------------


def test_a_steward_sees_the_flagged_span_and_the_viewing_is_ledgered(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    steward = people["data_steward"]
    _signed_in(client, steward)
    assert "Show record" in client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    start = Entry.objects.count()

    response = client.post(_preview_url(version) + "preview/")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert f'please write to <mark class="pii-span" id="flagged">{ADDRESS}</mark> about the refund' in page
    assert "refunds" in page  # the record's other fields too
    (viewed,) = _entries(start)
    scan = PiiScan.objects.get(version=version)
    assert viewed["action"] == "pii_finding.viewed" and viewed["actor"]["name"] == steward.username
    assert viewed["subject"]["type"] == "dataset_version" and viewed["subject"]["id"] == str(version.pk)
    assert viewed["payload"] == {"scan": scan.pk, "finding": 1, "entity": "EMAIL_ADDRESS", "record": 2,
                                 "start": 16, "end": 40}  # fmt: skip
    assert f"entry #{Entry.objects.latest('index').index}" in page
    # The text is kept nowhere: not in the ledger, the scan, the marks or the session's messages.
    assert not Entry.objects.filter(body__contains=ADDRESS.encode()).exists()
    assert ADDRESS not in json.dumps(scan.findings)
    assert client.post(_preview_url(version) + "preview/").status_code == 200  # each viewing is recorded
    assert [e["action"] for e in _entries(start)] == ["pii_finding.viewed"] * 2


def test_a_preview_is_a_post_and_for_stewards_only(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    _signed_in(client, people["compliance_officer"])
    page = client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    assert 'id="findings-table"' in page and "Show record" not in page
    start = Entry.objects.count()
    response = client.post(_preview_url(version) + "preview/", follow=True)
    assert response.redirect_chain[-1][0] == f"{VERSIONS}{version.pk}/change/"
    assert _messages(response) == [
        f"viewing a flagged record needs the data_steward role in project {people['project'].slug}"
    ]
    assert ADDRESS not in response.content.decode() and Entry.objects.count() == start
    _signed_in(client, people["data_steward"])
    assert client.get(_preview_url(version) + "preview/").status_code == 405
    missing = client.post(_preview_url(version, number=9) + "preview/", follow=True)
    assert _messages(missing) == [
        f"scan {PiiScan.objects.get(version=version).pk} kept 1 finding(s); there is no finding 9"
    ]
    assert Entry.objects.count() == start


def test_a_preview_of_a_version_whose_file_is_gone_is_refused(client: Client, people: dict[str, Any]) -> None:
    from common import artifacts

    version = _scanned_version(people)
    artifacts.blob_path(version.sha256).unlink()
    _signed_in(client, people["data_steward"])
    start = Entry.objects.count()
    response = client.post(_preview_url(version) + "preview/", follow=True)
    (message,) = _messages(response)
    assert message.startswith(f"dataset version {version.pk}: ") and Entry.objects.count() == start


def test_marks_and_the_review_go_through_the_services(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    steward = people["data_steward"]
    _signed_in(client, steward)
    base, start = _preview_url(version), Entry.objects.count()

    marked = client.post(base + "mark/", {"state": FindingState.PERSONAL_DATA}, follow=True)
    assert _messages(marked) == ["Finding 1 marked personal data."]
    assert 'class="state-personal_data">personal data</span>' in marked.content.decode()
    again = client.post(base + "mark/", {"state": FindingState.PERSONAL_DATA}, follow=True)
    assert _messages(again) == ["Finding 1 was already marked personal data."]
    assert client.post(base + "mark/", {"state": "maybe"}, follow=True).status_code == 200
    (entry,) = _entries(start)
    assert entry["action"] == "pii_finding.marked"
    assert entry["payload"]["state"] == "personal_data" and entry["payload"]["previous_state"] is None

    # A false-positive review contradicts a finding marked personal data: refused, nothing changes.
    refused = client.post(f"{VERSIONS}{version.pk}/review/", {"decision": "false_positive"}, follow=True)
    scan = PiiScan.objects.get(version=version)
    assert _messages(refused) == [
        f"finding(s) 1 of scan {scan.pk} are marked personal data: mark them otherwise, or review the version as "
        "confirmed or anonymisation_required"
    ]
    assert DatasetVersion.objects.get(pk=version.pk).review == Review.UNREVIEWED
    page = client.post(base + "preview/").content.decode()
    assert 'name="allow"' in page and 'name="allow_pattern"' in page  # the allow-list, where the mark is made
    allowed = client.post(base + "mark/", {"state": FindingState.FALSE_POSITIVE, "allow": "value"}, follow=True)
    assert _messages(allowed) == ["Finding 1 marked not personal data; its value is on the project's allow-list."]
    (entry,) = PiiListEntry.objects.filter(project=people["project"])
    assert entry.kind == "allow" and entry.entity == "EMAIL_ADDRESS" and entry.value_hash
    assert (
        ADDRESS not in json.dumps([entry.pattern, entry.reason])
        and not Entry.objects.filter(body__contains=ADDRESS.encode()).exists()
    )
    reviewed = client.post(
        f"{VERSIONS}{version.pk}/review/", {"decision": "false_positive", "note": "a test address"}, follow=True
    )
    assert _messages(reviewed) == [
        f"Review of {version} recorded: false_positive; it may be used (personal data reviewed: false_positive)."
    ]
    version.refresh_from_db()
    assert (version.review, version.reviewed_by, version.review_note) == ("false_positive", steward, "a test address")
    assert [e["action"] for e in _entries(start)] == [
        "pii_finding.marked", "pii_finding.viewed", "pii_finding.marked", "pii_list.entry_added",
        "dataset_version.reviewed",
    ]  # fmt: skip
    assert PiiFindingMark.objects.get().state == FindingState.FALSE_POSITIVE
    bad = client.post(f"{VERSIONS}{version.pk}/review/", {"decision": "fine"}, follow=True)
    assert _messages(bad)[0].startswith("No review recorded: decision: Select a valid choice.")


def test_marks_and_reviews_by_others_are_refused(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    _signed_in(client, people["compliance_officer"])
    start = Entry.objects.count()
    page = client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    assert 'id="review-form"' not in page
    marked = client.post(_preview_url(version) + "mark/", {"state": "false_positive"}, follow=True)
    assert _messages(marked) == [
        f"marking a PII finding needs the data_steward role in project {people['project'].slug}"
    ]
    reviewed = client.post(f"{VERSIONS}{version.pk}/review/", {"decision": "confirmed"}, follow=True)
    assert _messages(reviewed) == [
        f"reviewing personal data needs the data_steward role in project {people['project'].slug}"
    ]
    assert Entry.objects.count() == start and not PiiFindingMark.objects.exists()
    assert DatasetVersion.objects.get(pk=version.pk).review == Review.UNREVIEWED


def test_a_steward_asks_to_train_on_a_reviewed_version(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    _signed_in(client, people["data_steward"])
    assert 'id="submit-form"' not in client.get(f"{VERSIONS}{version.pk}/change/").content.decode()  # unreviewed
    client.post(f"{VERSIONS}{version.pk}/review/", {"decision": "confirmed"}, follow=True)  # its message read here
    response = client.post(f"{VERSIONS}{version.pk}/submit/", {"comment": "for the tone fine-tune"}, follow=True)
    request = ApprovalRequest.objects.get()
    assert _messages(response) == [
        f"Approval request #{request.pk} opened: it waits for 1 data_steward, 1 compliance_officer."
    ]
    assert request.requester == people["data_steward"] and request.comment == "for the tone fine-tune"
    assert f"#{request.pk}</a>" in response.content.decode()
    assert 'id="submit-form"' not in response.content.decode()  # one open request: no second offered
    again = client.post(f"{VERSIONS}{version.pk}/submit/", {"comment": ""}, follow=True)
    assert _messages(again)[0].startswith("a request for dataset_version.use_for_training on this dataset_version")
    assert ApprovalRequest.objects.count() == 1


# --- 4. Lists and structured fields ------------------------------------------------------------


def test_the_lists_and_pages_show_structured_fields_as_tables(client: Client, people: dict[str, Any]) -> None:
    version = _scanned_version(people)
    _signed_in(client, people["data_steward"])
    listing = client.get(VERSIONS).content.decode()
    assert '<span class="use use-no">no</span> <span class="use-reason">personal data was found' in listing
    scan = PiiScan.objects.get(version=version)
    assert scan.status == ScanStatus.SUCCEEDED
    page = client.get(f"/admin/registry/piiscan/{scan.pk}/change/").content.decode()
    assert '<table class="readable"><tr><th scope="row">EMAIL_ADDRESS</th>' in page
    assert '"samples"' not in page and "&quot;samples&quot;" not in page
