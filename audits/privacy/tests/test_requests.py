"""Data-subject requests through the real services: planted personal data in two datasets, real
PII scans, a real fine-tune, a deployment; then access and erasure requests for one person."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.services import ERASED, vault_open
from audits.privacy import selectors
from audits.privacy.models import DataSubjectRequest, DeadlineFlag, ModelReview, RequestState
from audits.privacy.services import (
    dsr_access_package,
    dsr_complete,
    dsr_confirm_receipt,
    dsr_deny,
    dsr_erase,
    dsr_extend,
    dsr_receive,
    dsr_search,
    dsr_verify_identity,
    dsr_withdraw,
    legal_hold_place,
    legal_hold_release,
    model_review_close,
    package_sha256,
)
from audits.privacy.tasks import flag_deadlines
from common import artifacts
from common.errors import Conflict, DomainError, NotFound, PermissionDenied
from common.testing import admin_login
from governance.services import approval_request_decide, approval_request_submit
from registry.models import DatasetVersion, PiiScan
from registry.services import dataset_version_review, dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset
from training.tests.conftest import PATTERN_ONLY, approve_run, request_run

pytestmark = pytest.mark.django_db

ANA = "ana.silva@example.org"
CONTACTS = [
    {"text": f"Please call me back, my address is {ANA}", "channel": "email"},
    {"text": "bob.jones@example.net asked about his invoice", "channel": "email"},
    {"text": "the parcel arrived late but intact", "channel": "phone"},
    {"text": f"ANA.SILVA@EXAMPLE.ORG wants to change her plan", "channel": "web"},  # noqa: F541
    {"text": "hana.silva@example.org is a different customer", "channel": "email"},
] + [{"text": f"ticket {i}: the order shipped on day {i % 7}", "channel": "web"} for i in range(20)]
ORDERS = [
    {"text": "order 1 for carla@example.com", "note": "paid"},
    {"text": "order 2 shipped", "note": f"contact {ANA} on delivery"},
    {"text": "order 3 refunded", "note": "no contact"},
]


def _jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _scan(version: Any, system: Any) -> None:
    with override_settings(**PATTERN_ONLY):
        for scan in PiiScan.objects.filter(version=version, status="queued"):
            pii_scan_run(scan_id=scan.pk, actor=system)
    version.refresh_from_db()


def _scanned_version(people: dict[str, Any], slug: str, rows: list[dict[str, str]]) -> DatasetVersion:
    dataset = make_dataset(people, slug=slug)
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=dataset, filename=f"{slug}.jsonl", data=_jsonl(rows)
    )
    _scan(version, people["system"])
    assert version.pii_verdict == "found"
    return version


def _approved_version(people: dict[str, Any], slug: str, rows: list[dict[str, str]]) -> DatasetVersion:
    version = _scanned_version(people, slug, rows)
    dataset_version_review(actor=people["data_steward"], version=version, decision="confirmed", note="contract")
    request = approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    for approver in ("data_steward", "compliance_officer"):  # personal data: the high-risk rule's two slots
        approval_request_decide(actor=people[approver], request_id=request.pk, decision="approve", reason="ok")
    version.refresh_from_db()
    return version


def _run_blob_deletions(callbacks: list[Any]) -> None:
    """Run what the erasure left for after commit that deletes blobs. (The scans it dispatched are
    run by ``_scan``; the ledger's WAL purge cannot run inside the test's transaction.)"""
    from registry.services import _blob_delete_unless_live

    deletions = [c for c in callbacks if getattr(c, "func", None) is _blob_delete_unless_live]
    assert deletions
    for deletion in deletions:
        deletion()


def _actions(request: DataSubjectRequest) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="data_subject_request", subject_id=str(request.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def _payload(action: str) -> Any:
    return json.loads(bytes(Entry.objects.filter(action=action).order_by("-index").first().body))["payload"]


def _receive(people: dict[str, Any], kind: str = "access", regime: str = "gdpr", **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "actor": people["compliance_officer"], "project": people["project"], "regime": regime, "kind": kind,
        "channel": "email", "received_at": timezone.now(), "identifiers": [{"kind": "EMAIL_ADDRESS", "value": ANA}],
    }  # fmt: skip
    arguments.update(overrides)
    return dsr_receive(**arguments)


def _searched(people: dict[str, Any], kind: str = "access", **overrides: Any) -> DataSubjectRequest:
    officer = people["compliance_officer"]
    request = _receive(people, kind, **overrides)
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    return dsr_search(actor=officer, request=request)


@pytest.fixture
def world(ready: dict[str, Any]) -> dict[str, Any]:
    """Two datasets holding Ana (and others), a model fine-tuned on the first, deployed; and a
    deployment of the base model, which never saw her."""
    from serving.services import deployment_request
    from training.services import fine_tune_run_execute

    contacts = _approved_version(ready, "contacts", CONTACTS)
    orders = _approved_version(ready, "orders", ORDERS)
    run = approve_run(ready, request_run(ready, name="contacts-tone", dataset_versions=[contacts]))
    done = fine_tune_run_execute(run_id=run.pk, idempotency_key=str(run.idempotency_key), worker="test")
    assert done is not None and done.state == "succeeded", done.failure_reason if done else None
    target, guard = {"max_tokens": 16}, {"mode": "redact", "entities": ["EMAIL_ADDRESS"]}
    deployment = deployment_request(
        actor=ready["ml_engineer"], model_version=done.output, name="assistant", environment="staging",
        target=target, guard=guard,
    )  # fmt: skip
    untouched = deployment_request(
        actor=ready["ml_engineer"], model_version=ready["base"], name="base", environment="staging",
        target=target, guard=guard,
    )  # fmt: skip
    return {**ready, "contacts": contacts, "orders": orders, "model_version": done.output,
            "deployment": deployment, "untouched": untouched}  # fmt: skip


@pytest.fixture
def datasets(people: dict[str, Any]) -> dict[str, Any]:
    """The two datasets holding Ana, scanned; no model (for the tests that need no lineage)."""
    return {**people, "contacts": _scanned_version(people, "contacts", CONTACTS),
            "orders": _scanned_version(people, "orders", ORDERS)}  # fmt: skip


def test_access_then_erasure_of_one_person(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    officer, contacts, orders = world["compliance_officer"], world["contacts"], world["orders"]

    # Access (GDPR Art. 15).
    access = _searched(world, "access")
    assert access.state == RequestState.SEARCHED and access.findings["found"] is True
    assert {v["id"] for v in access.findings["dataset_versions"]} == {contacts.pk, orders.pk}
    assert [m["id"] for m in access.findings["model_versions"]] == [world["model_version"].pk]
    assert [d["id"] for d in access.findings["deployments"]] == [world["deployment"].pk]
    package, digest = dsr_access_package(actor=officer, request=access)
    assert digest == package_sha256(package)
    assert {(v["id"], v["records"]) for v in package["dataset_versions"]} == {(contacts.pk, 2), (orders.pk, 1)}
    assert [m["id"] for m in package["model_versions"]] == [world["model_version"].pk]
    assert [d["id"] for d in package["deployments"]] == [world["deployment"].pk]
    texts = [" ".join(r["fields"].values()) for r in package["records"]]
    assert len(texts) == 3 and all(ANA in t.lower() for t in texts)
    assert not any(other in t for t in texts for other in ("bob.jones", "hana.silva", "carla@"))
    assert {p["purpose"] for p in package["purposes"]} == {"fine-tune the support assistant"}
    assert package["categories"]["identifiers_found"] == ["EMAIL_ADDRESS"]
    assert package["storage_period"][0]["retention_days"] == 365
    assert package["source"][0]["source"] == "helpdesk export"
    assert package["rights"] and "Art. 22" in package["automated_decision_making"]
    issued = _payload("data_subject_request.access_package_issued")
    assert issued["sha256"] == digest and issued["records"] == 3
    assert ANA not in json.dumps([json.loads(bytes(e.body)) for e in Entry.objects.all()]).lower()
    access = dsr_complete(actor=officer, request=access, nature="package sent by email")
    assert _actions(access) == [
        "data_subject_request.received", "data_subject_request.identity_verified", "data_subject_request.searched",
        "data_subject_request.access_package_issued", "data_subject_request.completed",
    ]  # fmt: skip

    # Erasure (GDPR Art. 17).
    erasure = _searched(world, "erasure")
    with django_capture_on_commit_callbacks() as after_commit:
        erasure = dsr_erase(actor=officer, request=erasure)
    _run_blob_deletions(after_commit)
    contacts.refresh_from_db()
    orders.refresh_from_db()
    for old in (contacts, orders):
        assert old.erased_at is not None and f"request {erasure.pk}" in old.erased_reason
        assert not artifacts.blob_path(old.sha256).exists()
        new = DatasetVersion.objects.get(parent=old)
        assert new.derivation == "erased"
        data = artifacts.open_blob(new.sha256).read_bytes().decode()
        assert not [line for line in data.lower().splitlines() if ANA in line.replace("hana.silva", "")]
        _scan(new, world["system"])  # the registry's scan of the new version
    new_contacts = DatasetVersion.objects.get(parent=contacts).pk
    assert DatasetVersion.objects.get(pk=new_contacts).record_count == len(CONTACTS) - 2
    kept = artifacts.open_blob(DatasetVersion.objects.get(pk=new_contacts).sha256).read_bytes().decode()
    assert "bob.jones@example.net" in kept and "hana.silva@example.org" in kept
    review = ModelReview.objects.get(request=erasure)
    assert review.model_version == world["model_version"] and review.closed_at is None
    assert review.dataset_versions == [contacts.pk]
    # Crypto-shredded: this request's identifiers, and the closed access request's, are unreadable.
    assert DataSubjectKey.objects.get(ref=erasure.subject_ref).key is None
    assert vault_open(erasure.identifiers_sealed) == ERASED
    assert vault_open(DataSubjectRequest.objects.get(pk=access.pk).identifiers_sealed) == ERASED
    erased = _payload("data_subject_request.erased")
    assert {r["old"] for r in erased["replaced"]} == {contacts.pk, orders.pk} and erased["model_reviews"] == [review.pk]
    assert _payload("model_review.opened")["request"] == erasure.pk
    assert Entry.objects.filter(action="dataset_version.erased").count() == 2
    assert Entry.objects.filter(action="ledger.data_subject.erased").count() == 2
    erasure = dsr_complete(actor=officer, request=erasure, nature="erased; the requester was told")
    out = io.StringIO()
    call_command("ledger", "verify", stdout=out)
    assert "ok" in out.getvalue().lower()

    # A new search finds her nowhere; the model review is closed with an outcome.
    again = _searched(world, "access", identifiers=[{"kind": "email", "value": ANA}])
    assert again.findings["found"] is False and "no dataset version" in again.findings["message"]
    review = model_review_close(actor=officer, review=review, outcome="kept", note="2 records of 25; negligible")
    assert review.outcome == "kept" and _payload("model_review.closed")["outcome"] == "kept"
    with pytest.raises(Conflict, match="closed"):
        model_review_close(actor=officer, review=review, outcome="retired", note="again")


def test_a_legal_hold_refuses_erasure_with_its_reason_and_logs_it(datasets: dict[str, Any]) -> None:
    world = datasets
    officer = world["compliance_officer"]
    hold = legal_hold_place(
        actor=officer, project=world["project"], reason="litigation 2025-17 (preserve)",
        identifiers=[{"kind": "email", "value": ANA.upper()}],
    )  # fmt: skip
    erasure = _searched(world, "erasure")
    with pytest.raises(DomainError, match=r"legal hold .* \(litigation 2025-17 \(preserve\)\)") as caught:
        dsr_erase(actor=officer, request=erasure)
    assert caught.value.code == "legal_hold" and caught.value.status_code == 422
    assert _actions(erasure)[-1] == "data_subject_request.erasure_refused"
    assert _payload("data_subject_request.erasure_refused")["reason"] == "litigation 2025-17 (preserve)"
    world["contacts"].refresh_from_db()
    assert world["contacts"].erased_at is None and artifacts.blob_path(world["contacts"].sha256).exists()
    assert vault_open(erasure.identifiers_sealed) == [{"kind": "email", "value": ANA}]
    assert not ModelReview.objects.exists()
    legal_hold_release(actor=officer, hold=hold, reason="case settled")
    dsr_erase(actor=officer, request=erasure)
    world["contacts"].refresh_from_db()
    assert world["contacts"].erased_at is not None


def test_a_project_wide_hold_covers_everyone(datasets: dict[str, Any]) -> None:
    world = datasets
    legal_hold_place(actor=world["compliance_officer"], project=world["project"], reason="regulator inquiry")
    with pytest.raises(DomainError, match="regulator inquiry"):
        dsr_erase(actor=world["compliance_officer"], request=_searched(world, "erasure"))


def test_an_unknown_person_is_found_nowhere_and_erasure_changes_nothing(datasets: dict[str, Any]) -> None:
    world = datasets
    officer = world["compliance_officer"]
    request = _searched(world, "erasure", identifiers=[{"kind": "email", "value": "nobody@example.org"}])
    assert request.findings["found"] is False
    assert request.findings["message"] == "no dataset version of project assistant holds these identifiers " + (
        "(per the subject index)"
    )
    assert _payload("data_subject_request.searched")["dataset_versions"] == []
    before = Entry.objects.count()
    with pytest.raises(Conflict, match="holds this person; nothing erased") as caught:
        dsr_erase(actor=officer, request=request)
    assert caught.value.code == "nothing_to_erase" and Entry.objects.count() == before
    assert DataSubjectKey.objects.get(ref=request.subject_ref).key is not None
    completed = dsr_complete(actor=officer, request=request, nature="told the requester we hold no data")
    assert completed.state == RequestState.COMPLETED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"regime": "hipaa"}, "regime"),
        ({"kind": "know"}, "kind"),  # a CCPA kind under the GDPR
        ({"channel": "pigeon"}, "channel"),
        ({"received_at": datetime(2025, 3, 1, 12, 0)}, "naive"),
        ({"received_at": timezone.now() + timedelta(days=2)}, "future"),
        ({"identifiers": []}, "identifiers"),
        ({"identifiers": [{"kind": "passport", "value": "X1"}]}, "unknown identifier kind 'passport'"),
        ({"identifiers": [{"kind": "email", "value": "  "}]}, "identifiers"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_input_is_refused_naming_the_problem_and_changes_nothing(
    people: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=field):
        _receive(people, **overrides)
    assert DataSubjectRequest.objects.count() == 0 and Entry.objects.count() == before
    assert not DataSubjectKey.objects.exists()


def test_bad_transitions_are_refused(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    request = _receive(people, "access")
    with pytest.raises(Conflict, match="is received; the search needs it identity_verified or searched"):
        dsr_search(actor=officer, request=request)
    with pytest.raises(Conflict, match="completion needs it searched"):
        dsr_complete(actor=officer, request=request, nature="done")
    with pytest.raises(Conflict, match="erasure or delete request, not access"):
        dsr_erase(actor=officer, request=request)
    request = dsr_verify_identity(actor=officer, request=request, method="video call")
    with pytest.raises(Conflict, match="is identity_verified"):
        dsr_verify_identity(actor=officer, request=request, method="again")
    request = dsr_search(actor=officer, request=request)
    with pytest.raises(Conflict, match="issue the access package"):
        dsr_complete(actor=officer, request=request, nature="done")
    with pytest.raises(DomainError, match="basis"):
        dsr_deny(actor=officer, request=request, basis=" ")
    denied = dsr_deny(actor=officer, request=request, basis="manifestly unfounded (GDPR Art. 12(5))")
    assert denied.state == RequestState.DENIED and denied.responded_at is not None
    for call in (
        lambda: dsr_withdraw(actor=officer, request=denied, reason="phone"),
        lambda: dsr_extend(actor=officer, request=denied, reason="complex"),
        lambda: dsr_access_package(actor=officer, request=denied),
    ):
        with pytest.raises(Conflict, match="is denied"):
            call()
    assert _actions(denied)[-1] == "data_subject_request.denied"
    assert _payload("data_subject_request.denied")["basis"] == "manifestly unfounded (GDPR Art. 12(5))"
    with pytest.raises(Conflict, match="never deleted"):
        denied.delete()
    with pytest.raises(Conflict, match="never deleted"):
        DataSubjectRequest.objects.all().delete()


def test_extension_rules(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    received = timezone.now() - timedelta(days=3)
    gdpr = _receive(people, "access", received_at=received)
    with pytest.raises(DomainError, match="reason"):
        dsr_extend(actor=officer, request=gdpr, reason="")
    late = gdpr.extension_notice_by + timedelta(seconds=1)
    with pytest.raises(Conflict, match="had to be notified by"):
        dsr_extend(actor=officer, request=gdpr, reason="complex", now=late)
    first = gdpr.respond_by
    extended = dsr_extend(actor=officer, request=gdpr, reason="many datasets", now=gdpr.extension_notice_by)
    assert extended.extended and extended.respond_by > first
    assert _payload("data_subject_request.extended")["reason"] == "many datasets"
    with pytest.raises(Conflict, match="only once"):
        dsr_extend(actor=officer, request=extended, reason="again", now=received)
    opt_out = _receive(people, "opt_out", regime="ccpa")
    assert opt_out.confirm_by is None and opt_out.extension_notice_by is None
    with pytest.raises(Conflict, match="cannot be extended"):
        dsr_extend(actor=officer, request=opt_out, reason="busy")
    know = _receive(people, "know", regime="ccpa", received_at=datetime(2026, 3, 2, 17, 0, tzinfo=UTC))
    # 45 calendar days from Monday 2 March 2026 is 16 April; extended, 31 May.
    assert know.respond_by.astimezone(UTC).date().isoformat() == "2026-04-16"
    assert (
        dsr_extend(actor=officer, request=know, reason="volume", now=know.received_at)
        .respond_by.astimezone(UTC)
        .date()
        .isoformat()
        == "2026-05-31"
    )


def test_deadline_flags_with_a_frozen_now_notify_once(
    people: dict[str, Any], mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    officer = people["compliance_officer"]
    officer.email = "dpo@example.org"
    officer.save()
    received = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
    gdpr = _receive(people, "access", received_at=received)  # respond by Thursday 2 April
    ccpa = _receive(people, "delete", regime="ccpa", received_at=received)  # confirm by Monday 16 March
    assert gdpr.respond_by.date().isoformat() == "2026-04-02" and ccpa.confirm_by.date().isoformat() == "2026-03-16"

    with django_capture_on_commit_callbacks(execute=True):
        assert flag_deadlines(now="2026-03-03T09:00:00+00:00") == []
        assert flag_deadlines(now="2026-03-10T09:00:00+00:00") == [ccpa.pk]  # confirmation due soon
    ccpa.refresh_from_db()
    assert ccpa.deadline_flag == DeadlineFlag.DUE_SOON
    assert [m.subject for m in mailoutbox] == [f"Data-subject request #{ccpa.pk} is due soon"]
    assert ANA not in mailoutbox[0].body
    dsr_confirm_receipt(actor=officer, request=ccpa)
    with django_capture_on_commit_callbacks(execute=True):
        changed = flag_deadlines(now="2026-04-03T00:00:01+00:00")  # GDPR overdue; CCPA back on time
        assert flag_deadlines(now="2026-04-03T00:00:01+00:00") == []  # idempotent
    assert sorted(changed) == sorted([gdpr.pk, ccpa.pk])
    gdpr.refresh_from_db()
    ccpa.refresh_from_db()
    assert gdpr.deadline_flag == DeadlineFlag.OVERDUE and ccpa.deadline_flag == DeadlineFlag.ON_TIME
    assert [m.subject for m in mailoutbox][1:] == [f"Data-subject request #{gdpr.pk} is overdue"]
    assert _payload("data_subject_request.deadline_flagged")["flag"] in {"overdue", "on_time"}
    assert Entry.objects.filter(action="data_subject_request.deadline_flagged").count() == 3
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["privacy-flag-deadlines"]["task"] == flag_deadlines.name


def test_request_log_fields(people: dict[str, Any]) -> None:
    officer = people["compliance_officer"]
    request = _receive(people, "know", regime="ccpa", channel="phone")
    request = dsr_verify_identity(actor=officer, request=request, method="security questions")
    dsr_deny(actor=officer, request=request, basis="could not verify identity (§7062)", nature="denied by letter")
    _receive(people, "opt_out", regime="ccpa", channel="web_form")
    rows = selectors.request_log(user=people["auditor"], project=people["project"])
    assert [(r["nature"], r["manner"]) for r in rows] == [("know", "phone"), ("opt_out", "web_form")]
    first = rows[0]
    assert first["request_date"] == request.received_at and first["response_date"] is not None
    assert first["response_nature"] == "denied by letter"
    assert first["denial_basis"] == "could not verify identity (§7062)"
    assert rows[1]["response_date"] is None and rows[1]["denial_basis"] == ""
    with pytest.raises(PermissionDenied):
        selectors.request_log(user=people["ml_engineer"], project=people["project"])


def test_permissions_and_visibility(people: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model

    from governance.roles import Role
    from governance.services import project_create, project_role_grant

    request = _receive(people, "access")
    for who in ("ml_engineer", "data_steward", "auditor"):
        with pytest.raises(PermissionDenied, match="compliance_officer"):
            _receive(people, "access", actor=people[who])
        with pytest.raises(PermissionDenied):
            dsr_verify_identity(actor=people[who], request=request, method="x")
    other = project_create(actor=people["system"], slug="other", name="Other")
    stranger = get_user_model().objects.create_user(username="other-officer")
    project_role_grant(actor=people["system"], project=other, user=stranger, role=Role.COMPLIANCE_OFFICER, reason="t")
    with pytest.raises(NotFound):
        selectors.request_get(user=stranger, pk=request.pk)
    with pytest.raises(PermissionDenied):
        dsr_search(actor=stranger, request=request)
    assert list(selectors.request_list(user=stranger)) == []
    assert list(selectors.request_list(user=people["auditor"])) == [request]
    with pytest.raises(PermissionDenied):
        selectors.request_get(user=people["ml_engineer"], pk=request.pk)
    assert list(selectors.request_list(user=people["ml_engineer"])) == []


def test_the_api_runs_a_request_and_hides_it_from_other_projects(people: dict[str, Any], client: Any) -> None:
    from django.contrib.auth import get_user_model

    from governance.roles import Role
    from governance.services import api_token_create, project_create, project_role_grant

    def auth(user: Any) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}

    officer = auth(people["compliance_officer"])
    body = {
        "regime": "gdpr", "kind": "access", "channel": "web_form", "received_at": "2025-06-02T09:00:00+02:00",
        "identifiers": [{"kind": "EMAIL_ADDRESS", "value": ANA}],
    }  # fmt: skip
    created = client.post("/api/v1/privacy/projects/assistant/requests/", body, content_type="application/json",
                          **officer)  # fmt: skip
    assert created.status_code == 201, created.content
    assert ANA not in created.content.decode().lower()
    pk = created.json()["id"]
    naive = client.post("/api/v1/privacy/projects/assistant/requests/", {**body, "received_at": "2025-06-02T09:00"},
                        content_type="application/json", **officer)  # fmt: skip
    assert naive.status_code == 400 and "timezone-aware" in naive.json()["error"]["message"]
    path = f"/api/v1/privacy/requests/{pk}"
    early = client.post(f"{path}/search", content_type="application/json", **officer)
    assert early.status_code == 409 and early.json()["error"]["code"] == "invalid_transition"
    assert client.post(f"{path}/verify-identity", {"method": "reply"}, content_type="application/json",
                       **officer).status_code == 200  # fmt: skip
    searched = client.post(f"{path}/search", content_type="application/json", **officer)
    assert searched.status_code == 200 and searched.json()["findings"]["found"] is False
    package = client.post(f"{path}/access-package", content_type="application/json", **officer).json()
    assert package["package"]["data_held"] is False and len(package["sha256"]) == 64
    assert client.get(path, **auth(people["auditor"])).json()["package_sha256"] == package["sha256"]
    assert client.get(path, **auth(people["ml_engineer"])).status_code == 403
    log = client.get("/api/v1/privacy/projects/assistant/request-log", **auth(people["auditor"]))
    assert [(r["nature"], r["manner"]) for r in log.json()["results"]] == [("access", "web_form")]
    log_url = "/api/v1/privacy/projects/assistant/request-log"
    naive_since = client.get(log_url, {"since": "2025-06-01T00:00"}, **auth(people["auditor"]))
    assert naive_since.status_code == 400 and "since" in naive_since.json()["error"]["message"]
    assert "timezone-aware" in naive_since.json()["error"]["message"]
    later = client.get(log_url, {"since": "2099-01-01T00:00Z"}, **auth(people["auditor"]))
    assert later.status_code == 200 and later.json()["results"] == []
    earlier = client.get(log_url, {"since": "2025-06-01T00:00+02:00"}, **auth(people["auditor"]))
    assert [r["nature"] for r in earlier.json()["results"]] == ["access"]

    other = project_create(actor=people["system"], slug="other", name="Other")
    stranger = get_user_model().objects.create_user(username="other-officer")
    project_role_grant(actor=people["system"], project=other, user=stranger, role=Role.COMPLIANCE_OFFICER, reason="t")
    assert client.get(path, **auth(stranger)).status_code == 404
    assert client.post(f"{path}/deny", {"basis": "x"}, content_type="application/json",
                       **auth(stranger)).status_code == 404  # fmt: skip
    assert client.get("/api/v1/privacy/requests/", **auth(stranger)).json()["results"] == []


def test_the_admin_shows_the_flag_and_closes_reviews_through_the_service(datasets: dict[str, Any], client: Any) -> None:
    from registry.services import model_create, model_version_register_folder

    officer = datasets["compliance_officer"]
    officer.is_staff = True
    officer.save()
    contacts = datasets["contacts"]
    contacts = dataset_version_review(actor=datasets["data_steward"], version=contacts, decision="confirmed")
    import tempfile
    from pathlib import Path

    weights = Path(tempfile.mkdtemp(prefix="weights-"))
    (weights / "model.safetensors").write_bytes(b"weights")
    model = model_create(actor=datasets["ml_engineer"], project=datasets["project"], slug="m", name="M")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
        model_version_register_folder(
            actor=datasets["ml_engineer"], model=model, folder=str(weights), dataset_versions=[contacts]
        )
    request = dsr_erase(actor=officer, request=_searched(datasets, "erasure"))
    DataSubjectRequest.objects.filter(pk=request.pk).update(deadline_flag=DeadlineFlag.OVERDUE)
    _receive(datasets, "access")
    admin_login(client, officer)
    listing = client.get("/admin/privacy/datasubjectrequest/")
    # The list says the deadline as it stands now, in the request's zone; the stored flag filters.
    body = listing.content.decode()
    assert listing.status_code == 200 and '<span class="dsr-ok"><span class="dsr-nowrap">due ' in body
    assert " days left</span>" in body
    flagged = client.get("/admin/privacy/datasubjectrequest/", {"deadline_flag__exact": "overdue"}).content.decode()
    assert f">DSR-{request.pk}</a>" in flagged
    review = ModelReview.objects.get(request=request)
    url = "/admin/privacy/modelreview/"
    form = client.post(url, {"action": "close_reviews", "_selected_action": [review.pk]})
    assert form.status_code == 200 and "outcome" in form.content.decode()
    done = client.post(url, {"action": "close_reviews", "_selected_action": [review.pk], "apply": "1",
                             "outcome": "retired", "note": "replaced by v2"})  # fmt: skip
    assert done.status_code == 302
    review.refresh_from_db()
    assert review.outcome == "retired" and review.closed_by == officer
    assert _payload("model_review.closed")["note"] == "replaced by v2"
    assert client.get(f"/admin/privacy/datasubjectrequest/{request.pk}/delete/").status_code == 403


def test_the_admin_request_actions_say_what_the_services_did_and_log_refusals(
    datasets: dict[str, Any], client: Any, security_events: list[dict[str, Any]]
) -> None:
    officer = datasets["compliance_officer"]
    request = _receive(datasets, "access")
    request = dsr_verify_identity(actor=officer, request=request, method="reply from the address on file")
    unscanned = make_dataset(datasets, slug="unscanned")
    dataset_version_upload(actor=datasets["ml_engineer"], dataset=unscanned, filename="u.jsonl", data=b"{}\n")
    admin_login(client, officer)
    url = "/admin/privacy/datasubjectrequest/"

    def act(action: str) -> list[str]:
        response = client.post(url, {"action": action, "_selected_action": [request.pk]}, follow=True)
        assert response.status_code == 200
        return [str(m) for m in response.context["messages"]]

    # The search says what it found, and that a version not yet scanned is beyond the index.
    assert act("search") == [
        f"data-subject request {request.pk} (gdpr access, identity_verified): searched: 2 dataset version(s) of "
        "project assistant hold this person; 1 dataset version(s) not scanned yet, which the index cannot speak for"
    ]
    assert DataSubjectRequest.objects.get(pk=request.pk).state == RequestState.SEARCHED
    # A GDPR request has no receipt to confirm: refused, shown, and logged as the API logs it.
    start = Entry.objects.count()
    assert act("confirm_receipt") == [
        f"data-subject request {request.pk} (gdpr access, searched): a gdpr access request has no confirmation step"
    ]
    assert Entry.objects.count() == start
    denied = [e for e in security_events if e["event"] == "request.denied"]
    assert [(e["object_type"], e["object_id"], e["status"], e["reason"], e["user_id"]) for e in denied] == [
        ("privacy.datasubjectrequest", request.pk, 409, "no_confirmation", officer.pk)
    ]


def test_a_dataset_changed_on_disk_stops_the_answer_and_names_the_version(datasets: dict[str, Any]) -> None:
    from common import artifacts

    officer, contacts = datasets["compliance_officer"], datasets["contacts"]
    access, erasure = _searched(datasets, "access"), _searched(datasets, "erasure")
    blob = artifacts.blob_path(contacts.sha256)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"the parcel", b"the packet"))  # someone edits the stored file
    for attempt in (lambda: dsr_access_package(actor=officer, request=access),
                    lambda: dsr_erase(actor=officer, request=erasure)):  # fmt: skip
        start = Entry.objects.count()
        with pytest.raises(Conflict) as caught:
            attempt()
        assert caught.value.code == "blob_corrupt" and f"dataset version {contacts.pk}" in caught.value.message
        assert Entry.objects.count() == start  # the refused answer wrote nothing
    assert {r.state for r in DataSubjectRequest.objects.filter(pk__in=[access.pk, erasure.pk])} == {"searched"}
