"""Approval workflows on the first governed subject, dataset versions: policy rules, separation
of duties, quorum, digest binding, evidence, closed states and the ledger."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audits.ledger.models import Entry
from common.errors import Conflict, PermissionDenied
from common.testing import admin_login
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalState
from governance.policy import PolicyError, current_policy_set, load_policy_set, parse_policy
from governance.roles import Role
from governance.services import (
    PolicyViolation,
    approval_holds,
    approval_request_decide,
    approval_request_submit,
    approval_request_withdraw,
    approval_requests_expire_due,
    project_role_grant,
)
from registry.models import DatasetVersion, PiiScan
from registry.services import dataset_version_digest, dataset_version_review, dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset
from tests.threads import run_together

ACTION = "dataset_version.use_for_training"
PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}


def _version(people: dict[str, Any], data: bytes = b'{"text": "no personal data here"}\n') -> DatasetVersion:
    dataset = make_dataset(people, slug=f"d{DatasetVersion.objects.count()}")
    # In a transactional test the session's Celery worker, if one runs, would claim the scan once the
    # upload commits: it goes to a queue no worker reads, and runs here.
    with override_settings(PII_SCAN_QUEUE="approvals-tests"):
        version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    version.refresh_from_db()
    return version


def _submit(people: dict[str, Any], version: DatasetVersion, **context: str) -> ApprovalRequest:
    return approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk), action=ACTION,
        context=context, comment="for the tone fine-tune",
    )  # fmt: skip


def _entries(**filters: Any) -> list[dict[str, Any]]:
    return [json.loads(bytes(b)) for b in Entry.objects.filter(**filters).values_list("body", flat=True)]


@pytest.mark.django_db
def test_a_request_is_approved_by_its_slots_and_bound_to_the_digest(people: dict[str, Any]) -> None:
    version = _version(people)
    request = _submit(people, version)
    assert request.rule["approvals"] == [{"role": "data_steward", "count": 1}]
    assert request.subject_digest == dataset_version_digest(version)
    with pytest.raises(PolicyViolation) as caught:
        approval_request_decide(actor=people["ml_engineer"], request_id=request.pk, decision="approve", reason="mine")
    assert caught.value.code == "self_approval" and "separation of duties" in caught.value.message
    with pytest.raises(PermissionDenied):
        approval_request_decide(actor=people["auditor"], request_id=request.pk, decision="approve", reason="ok")
    approved = approval_request_decide(
        actor=people["data_steward"], request_id=request.pk, decision="approve", reason="clean data"
    )
    assert approved.state == ApprovalState.APPROVED
    assert approval_holds(subject_type="dataset_version", subject_id=str(version.pk), action=ACTION,
                          digest=dataset_version_digest(version))  # fmt: skip
    second = get_user_model().objects.create_user(username="second-steward")
    project_role_grant(
        actor=people["system"], project=people["project"], user=second, role=Role.DATA_STEWARD, reason="test setup"
    )
    with pytest.raises(Conflict, match="is approved"):
        approval_request_decide(actor=second, request_id=request.pk, decision="reject", reason="x")

    entries = _entries(action__startswith="approval.")
    assert [e["action"] for e in entries] == ["approval.requested", "approval.approved"]
    decision = entries[-1]
    assert decision["actor"]["name"] == "data-steward"
    assert decision["subject"]["digest"] == request.subject_digest
    assert decision["policy_hash"] == current_policy_set().hash
    assert decision["payload"]["reason"] == "clean data"
    assert ApprovalDecision.objects.get().ledger_index == Entry.objects.get(action="approval.approved").index


@pytest.mark.django_db
def test_two_slots_one_person_each_and_stale_digests(people: dict[str, Any]) -> None:
    version = _version(people)
    both = get_user_model().objects.create_user(username="both-hats")
    for role in (Role.DATA_STEWARD, Role.COMPLIANCE_OFFICER):
        project_role_grant(actor=people["system"], project=people["project"], user=both, role=role, reason="test setup")
    request = _submit(people, version, risk_tier="high")
    assert [s["role"] for s in request.rule["approvals"]] == ["data_steward", "compliance_officer"]
    first = approval_request_decide(actor=both, request_id=request.pk, decision="approve", reason="steward ok")
    assert first.state == ApprovalState.PENDING
    with pytest.raises(PolicyViolation, match="one person fills one slot"):
        approval_request_decide(actor=both, request_id=request.pk, decision="approve", reason="and compliance")
    with pytest.raises(Conflict, match="slot"):
        approval_request_decide(
            actor=people["data_steward"], request_id=request.pk, decision="approve", reason="me too"
        )
    # The subject changes under the request: the remaining decision is refused.
    DatasetVersion.objects.filter(pk=version.pk).update(review="confirmed")  # as a later review would
    with pytest.raises(Conflict) as caught:
        approval_request_decide(
            actor=people["compliance_officer"], request_id=request.pk, decision="approve", reason="ok"
        )
    assert caught.value.code == "stale_digest"


@pytest.mark.django_db
def test_evidence_blocks_unreviewed_personal_data(people: dict[str, Any]) -> None:
    version = _version(people, b'{"text": "write to ada@example.org"}\n')
    assert version.pii_verdict == "found"
    with pytest.raises(PolicyViolation) as caught:
        _submit(people, version)
    assert caught.value.code == "evidence_missing" and "personal_data_reviewed" in caught.value.message
    assert ApprovalRequest.objects.count() == 0
    dataset_version_review(actor=people["data_steward"], version=version, decision="confirmed", note="needed")
    request = _submit(people, version)
    assert request.state == ApprovalState.PENDING


@pytest.mark.django_db
def test_reject_withdraw_expire_are_final(people: dict[str, Any]) -> None:
    rejected = _submit(people, _version(people))
    approval_request_decide(actor=people["data_steward"], request_id=rejected.pk, decision="reject", reason="too old")
    with pytest.raises(Conflict, match="rejected"):
        approval_request_withdraw(actor=people["ml_engineer"], request_id=rejected.pk, reason="never mind")

    withdrawn = _submit(people, _version(people))
    with pytest.raises(PermissionDenied):
        approval_request_withdraw(actor=people["data_steward"], request_id=withdrawn.pk, reason="not mine")
    approval_request_withdraw(actor=people["ml_engineer"], request_id=withdrawn.pk, reason="wrong file")
    with pytest.raises(Conflict, match="withdrawn"):
        approval_request_decide(actor=people["data_steward"], request_id=withdrawn.pk, decision="approve", reason="x")

    expiring = _submit(people, _version(people))
    ApprovalRequest.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict, match="expired"):
        approval_request_decide(actor=people["data_steward"], request_id=expiring.pk, decision="approve", reason="x")
    assert approval_requests_expire_due(actor=people["system"]) == 1
    assert ApprovalRequest.objects.get(pk=expiring.pk).state == ApprovalState.EXPIRED
    assert approval_requests_expire_due(actor=people["system"]) == 0
    actions = [e["action"] for e in _entries(action__startswith="approval.")]
    assert (
        actions.count("approval.rejected")
        == actions.count("approval.withdrawn")
        == actions.count("approval.expired")
        == 1
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sixteen_concurrent_approvers_fill_exactly_the_quorum(people: dict[str, Any]) -> None:
    version = _version(people)
    request = _submit(people, version, risk_tier="high")
    approvers = []
    for i in range(16):
        user = get_user_model().objects.create_user(username=f"approver-{i}")
        role = Role.DATA_STEWARD if i % 2 else Role.COMPLIANCE_OFFICER
        project_role_grant(actor=people["system"], project=people["project"], user=user, role=role, reason="test setup")
        approvers.append(user)
    outcomes = run_together(
        lambda i: approval_request_decide(
            actor=approvers[i], request_id=request.pk, decision="approve", reason="looks right"
        ),
        len(approvers),
    )
    assert outcomes.count("ok") == 2, outcomes
    assert set(outcomes) <= {"ok", "request_closed", "slot_filled"}, outcomes
    assert ApprovalDecision.objects.filter(request=request).count() == 2
    assert sorted(ApprovalDecision.objects.values_list("role", flat=True)) == ["compliance_officer", "data_steward"]
    assert ApprovalRequest.objects.get(pk=request.pk).state == ApprovalState.APPROVED
    indexes = list(Entry.objects.order_by("index").values_list("index", flat=True))
    assert indexes == list(range(len(indexes)))


BAD_POLICIES = [
    (
        "action: x.y\nrules:\n  - approvals:\n      - {role: wizard, count: 1}\n",
        "line 4, field rules[0].approvals[0].role",
    ),
    ("action: x.y\nrules:\n  - approvals: []\n", "line 3, field rules[0].approvals"),
    (
        "action: x.y\nrules:\n  - approvals:\n      - {role: data_steward, count: 0}\n",
        "line 4, field rules[0].approvals[0].count",
    ),
    (
        "action: x.y\nrules:\n  - approvals:\n      - {role: data_steward, count: 1}\n    evidence: [vibes]\n",
        "line 5, field rules[0].evidence[0]: unknown evidence check 'vibes'",
    ),
    (
        "action: x.y\nrules:\n  - approvals:\n      - {role: data_steward, count: 1}\n      - {role: data_steward, count: 1}\n",
        "line 4, field rules[0].approvals: a role has one slot",
    ),
    (
        "action: x.y\nrules:\n  - approvals:\n      - {role: data_steward, count: 1}\n    separation_of_duties: {requester_may_approve: true}\n",
        "line 5, field rules[0].separation_of_duties.requester_may_approve",
    ),
    ("action: x.y\nrules: [\n", "line 3: not valid YAML"),
    (
        "rules:\n  - approvals:\n      - {role: data_steward, count: 1}\n",
        "line 1, field (top): 'action' is a required property",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_POLICIES)
def test_a_bad_policy_file_is_refused_with_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("bad.yaml", text, known_evidence={"personal_data_reviewed"})
    assert str(caught.value).startswith("bad.yaml, ") and message in str(caught.value), str(caught.value)


def test_the_shipped_policies_load_and_a_bad_folder_stops_the_service(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import ROOT, subprocess_env
    from governance.evidence import known_checks

    shipped = load_policy_set(ROOT / "policies", known_checks()).policies
    assert {"dataset_version.use_for_training", "fine_tune_run.execute", "model_version.deploy"} <= set(shipped)
    (tmp_path / "broken.yaml").write_text(BAD_POLICIES[0][0])
    result = subprocess.run(
        [sys.executable, "manage.py", "policies", "check", "--dir", str(tmp_path)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "broken.yaml, line 4, field rules[0].approvals[0].role" in result.stderr
    web = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=subprocess_env(POLICY_DIR=str(tmp_path)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert web.returncode != 0
    assert web.stderr.strip().startswith("configuration error: POLICY_DIR: broken.yaml, line 4")


def test_the_boot_check_leaves_the_policy_set_loaded_for_the_first_decision(monkeypatch: Any) -> None:
    from governance import policy
    from governance.checks import require_valid_policies

    parsed, load = [], policy.load_policy_set
    monkeypatch.setattr(policy, "load_policy_set", lambda *a: parsed.append(a) or load(*a))
    policy._cached.cache_clear()
    require_valid_policies()
    assert len(parsed) == 1
    assert current_policy_set().hash.startswith("sha256:") and len(parsed) == 1  # no second parse


@pytest.mark.django_db
def test_the_approval_api_end_to_end(client: Any, people: dict[str, Any]) -> None:
    from governance.services import api_token_create

    def auth(user: Any) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}

    engineer, steward, auditor = auth(people["ml_engineer"]), auth(people["data_steward"]), auth(people["auditor"])
    version = _version(people)
    submitted = client.post(
        f"/api/v1/dataset-versions/{version.pk}/submit", {"action": ACTION, "comment": "tone tune"},
        content_type="application/json", **engineer,
    )  # fmt: skip
    assert submitted.status_code == 201, submitted.json()
    pk = submitted.json()["id"]
    assert [r["id"] for r in client.get("/api/v1/approvals/?inbox=1", **steward).json()["results"]] == [pk]
    assert client.get("/api/v1/approvals/?inbox=1", **engineer).json()["results"] == []
    assert client.get(f"/api/v1/approvals/{pk}", **auditor).json()["comment"] == "tone tune"
    body = {"reason": "mine"}
    own = client.post(f"/api/v1/approvals/{pk}/approve", body, content_type="application/json", **engineer)
    assert own.status_code == 422 and own.json()["error"]["code"] == "self_approval"
    assert (
        client.post(f"/api/v1/approvals/{pk}/approve", body, content_type="application/json", **auditor).status_code
        == 403
    )
    assert (
        client.post(f"/api/v1/approvals/{pk}/approve", {}, content_type="application/json", **steward).status_code
        == 400
    )
    done = client.post(
        f"/api/v1/approvals/{pk}/approve", {"reason": "clean"}, content_type="application/json", **steward
    )
    assert done.status_code == 200 and done.json()["state"] == "approved"
    assert done.json()["decisions"][0]["approver"] == "data-steward"
    again = client.post(
        f"/api/v1/approvals/{pk}/reject", {"reason": "late"}, content_type="application/json", **steward
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "request_closed"
    outsider = get_user_model().objects.create_user(username="outsider")
    assert client.get(f"/api/v1/approvals/{pk}", **auth(outsider)).status_code == 404
    assert (
        client.post(
            f"/api/v1/dataset-versions/{version.pk}/submit",
            {"action": ACTION},
            content_type="application/json",
            **auth(outsider),
        ).status_code
        == 404
    )


@pytest.mark.django_db
def test_a_new_policy_set_is_recorded_once_and_approvers_are_notified(
    people: dict[str, Any], mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    people["data_steward"].email = "steward@example.org"
    people["data_steward"].save()
    version = _version(people)
    with django_capture_on_commit_callbacks(execute=True):
        request = _submit(people, version)
    assert [m.to for m in mailoutbox] == [["steward@example.org"]]
    assert f"Request #{request.pk}" in mailoutbox[0].body
    _submit(people, _version(people))
    changes = _entries(action="policy_set.changed")
    assert len(changes) == 1
    assert changes[0]["policy_hash"] == current_policy_set().hash
    assert "dataset_version.use_for_training.yaml" in changes[0]["payload"]["files"]


@pytest.mark.django_db
def test_the_admin_inbox_decides_through_the_service(client: Any, people: dict[str, Any]) -> None:
    request = _submit(people, _version(people))
    admin_login(client, people["data_steward"])
    listing = client.get("/admin/governance/approvalrequest/?state__exact=pending")
    assert (
        listing.status_code == 200
        and f"/admin/governance/approvalrequest/{request.pk}/change/" in listing.content.decode()
    )
    detail = client.get(f"/admin/governance/approvalrequest/{request.pk}/change/").content.decode()
    assert request.subject_digest in detail and "for the tone fine-tune" in detail
    response = client.post(
        "/admin/governance/approvalrequest/",
        {"action": "approve_selected", "_selected_action": [request.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert ApprovalRequest.objects.get(pk=request.pk).state == ApprovalState.APPROVED
    assert _entries(action="approval.approved")[0]["actor"]["name"] == "data-steward"
    index = ApprovalDecision.objects.get(request=request).ledger_index
    history = client.get(f"/admin/governance/approvalrequest/{request.pk}/change/").content.decode()
    # The steward reads no ledger page: the decision's entry is named, not linked (no link to a 403).
    assert f"<td>#{index}</td>" in history and f'href="/admin/ledger/entry/{index}/change/"' not in history
    admin_login(client, people["compliance_officer"])
    history = client.get(f"/admin/governance/approvalrequest/{request.pk}/change/").content.decode()
    assert f'href="/admin/ledger/entry/{index}/change/"' in history
    other = _submit(people, _version(people))
    admin_login(client, people["auditor"])  # not an approver: the service refuses and the admin says why
    response = client.post(
        "/admin/governance/approvalrequest/",
        {"action": "approve_selected", "_selected_action": [other.pk]},
        follow=True,
    )
    assert "deciding needs one of the roles data_steward" in response.content.decode()
    assert ApprovalRequest.objects.get(pk=other.pk).state == ApprovalState.PENDING


@pytest.mark.django_db
def test_the_inbox_says_what_each_request_asks_naming_subjects_a_type_at_a_time(
    client: Any, people: dict[str, Any]
) -> None:
    versions = [_version(people) for _ in range(6)]
    requests = [_submit(people, version) for version in versions]
    admin_login(client, people["data_steward"])
    page = "/admin/governance/approvalrequest/?state__exact=pending"
    listing = client.get(page).content.decode()
    for version, request in zip(versions, requests, strict=True):
        assert f'<td class="field-asks">use for training: {version}</td>' in listing  # "… assistant/d5 v1"
        # The row's checkbox is named by the same words, for a screen reader.
        assert f'aria-label="Select request #{request.pk}: use for training: {version}"' in listing
    assert 'class="field-action"' not in listing and 'class="field-subject"' not in listing
    assert 'id="action-toggle"' in listing  # the column's select-all box stays
    with CaptureQueriesContext(connection) as six:
        client.get(page)
    _submit(people, _version(people))
    with CaptureQueriesContext(connection) as seven:
        client.get(page)
    assert len(seven) == len(six)  # one more row, no more queries: the names come in one
    title = client.get(f"/admin/governance/approvalrequest/{requests[0].pk}/change/").content.decode()
    assert f"<title>Request #{requests[0].pk}: use for training: {versions[0]} |" in title


@pytest.mark.django_db
def test_every_subject_type_names_its_subjects_in_bulk_as_one_at_a_time(people: dict[str, Any]) -> None:
    from governance.subjects import subject_type, subject_types
    from tests.test_permission_matrix import MEMBERS, _scenario

    members = {role: get_user_model().objects.create_user(username=f"m-{role}") for role in MEMBERS}
    _scenario("own", people, members)
    oddities = ["0", "x", "²", str(2**63)]
    for name in subject_types():
        kind = subject_type(name)
        # Every subject the scenario made has its ledger entries (primary keys differ by database).
        made = Entry.objects.filter(subject_type=name).values_list("subject_id", flat=True).distinct()
        ids = [*made, *oddities]
        one_at_a_time = {pk: str(obj) for pk in ids if (obj := kind.get(pk)) is not None}
        assert one_at_a_time, f"the scenario made no {name}"
        assert kind.names_by_id is not None and kind.names_by_id(ids) == one_at_a_time, name


@pytest.mark.django_db
def test_beat_expires_stale_requests(people: dict[str, Any]) -> None:
    from django.conf import settings

    from governance.tasks import expire_approvals

    assert settings.CELERY_BEAT_SCHEDULE["governance-expire-approvals"]["task"] == expire_approvals.name
    request = _submit(people, _version(people))
    assert expire_approvals() == 0
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert expire_approvals() == 1
    assert ApprovalRequest.objects.get(pk=request.pk).state == ApprovalState.EXPIRED


@pytest.mark.django_db
def test_break_glass_is_flagged_reviewed_and_can_be_revoked(people: dict[str, Any]) -> None:
    from common.errors import DomainError
    from governance.services import approval_break_glass, break_glass_review_close

    admin_user = get_user_model().objects.create_user(username="on-call-admin")
    project_role_grant(
        actor=people["system"], project=people["project"], user=admin_user, role=Role.PLATFORM_ADMIN, reason="on call"
    )
    version = _version(people)
    request = _submit(people, version, risk_tier="high")
    with pytest.raises(PermissionDenied):
        approval_break_glass(actor=people["data_steward"], request_id=request.pk, justification="x" * 30)
    with pytest.raises(DomainError, match="at least 20 characters"):
        approval_break_glass(actor=admin_user, request_id=request.pk, justification="urgent")
    approved = approval_break_glass(
        actor=admin_user, request_id=request.pk, justification="outage: the fraud model must be retrained tonight"
    )
    assert approved.state == ApprovalState.APPROVED
    entry = _entries(action="approval.break_glass")[0]
    assert entry["payload"]["break_glass"] is True and entry["actor"]["name"] == "on-call-admin"
    review = approved.break_glass
    assert review.due_at > timezone.now() and review.closed_at is None
    digest = dataset_version_digest(version)
    assert approval_holds(subject_type="dataset_version", subject_id=str(version.pk), action=ACTION, digest=digest)
    with pytest.raises(PermissionDenied):
        break_glass_review_close(actor=admin_user, review_id=review.pk, outcome="upheld", note="mine")
    break_glass_review_close(
        actor=people["compliance_officer"], review_id=review.pk, outcome="revoked", note="not an emergency"
    )
    assert not approval_holds(subject_type="dataset_version", subject_id=str(version.pk), action=ACTION, digest=digest)
    with pytest.raises(Conflict, match="closed as revoked"):
        break_glass_review_close(actor=people["compliance_officer"], review_id=review.pk, outcome="upheld", note="x")
    assert _entries(action="approval.break_glass_reviewed")[0]["payload"]["outcome"] == "revoked"


def _admin(people: dict[str, Any], username: str = "on-call-admin", *roles: Role) -> Any:
    user = get_user_model().objects.create_user(username=username)
    for role in (Role.PLATFORM_ADMIN, *roles):
        project_role_grant(actor=people["system"], project=people["project"], user=user, role=role, reason="on call")
    return user


@pytest.mark.django_db
def test_break_glass_refuses_an_admin_who_decided_and_an_expired_request(people: dict[str, Any]) -> None:
    from governance.services import approval_break_glass

    why = "outage: the fraud model must be retrained tonight"
    admin_steward = _admin(people, "admin-steward", Role.DATA_STEWARD)
    request = _submit(people, _version(people), risk_tier="high")
    approval_request_decide(actor=admin_steward, request_id=request.pk, decision="approve", reason="steward ok")
    before = (Entry.objects.count(), ApprovalDecision.objects.count())
    with pytest.raises(PolicyViolation) as caught:  # deciding twice, once through the slot, once by force
        approval_break_glass(actor=admin_steward, request_id=request.pk, justification=why)
    assert caught.value.code == "already_decided" and "another platform admin" in caught.value.message
    # Nothing decided; the refusal itself is recorded, as a decision's refusal is.
    assert (Entry.objects.count(), ApprovalDecision.objects.count()) == (before[0] + 1, before[1])
    assert Entry.objects.order_by("index").last().action == "separation_of_duties.refused"
    assert ApprovalRequest.objects.get(pk=request.pk).state == ApprovalState.PENDING
    assert approval_break_glass(actor=_admin(people), request_id=request.pk, justification=why).state == "approved"

    stale = _submit(people, _version(people))
    ApprovalRequest.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(Conflict) as caught:
        approval_break_glass(actor=_admin(people, "second-admin"), request_id=stale.pk, justification=why)
    assert caught.value.code == "request_expired"
    assert ApprovalRequest.objects.get(pk=stale.pk).state == ApprovalState.PENDING


@pytest.mark.django_db
def test_a_break_glass_review_is_closed_by_neither_its_admin_nor_the_requester(people: dict[str, Any]) -> None:
    from governance.models import BreakGlassReview
    from governance.services import approval_break_glass, break_glass_review_close

    why = "outage: the fraud model must be retrained tonight"
    officer_admin = _admin(people, "officer-admin", Role.COMPLIANCE_OFFICER)
    review = approval_break_glass(
        actor=officer_admin, request_id=_submit(people, _version(people)).pk, justification=why
    ).break_glass
    project_role_grant(actor=people["system"], project=people["project"], user=people["ml_engineer"],
                       role=Role.COMPLIANCE_OFFICER, reason="test setup")  # fmt: skip
    start = Entry.objects.count()
    for actor, who in ((officer_admin, "broke the glass"), (people["ml_engineer"], "made the request")):
        with pytest.raises(PolicyViolation) as caught:
            break_glass_review_close(actor=actor, review_id=review.pk, outcome="upheld", note="fine by me")
        assert caught.value.code == "self_review" and who in caught.value.message
    # Nothing closed; each refusal is recorded under separation of duties.
    refused = Entry.objects.filter(index__gte=start).values_list("action", flat=True)
    assert list(refused) == ["separation_of_duties.refused"] * 2
    assert BreakGlassReview.objects.get(pk=review.pk).closed_at is None
    closed = break_glass_review_close(
        actor=people["compliance_officer"], review_id=review.pk, outcome="upheld", note="a real outage"
    )
    assert closed.outcome == "upheld" and closed.closed_by == people["compliance_officer"]


@pytest.mark.django_db
def test_personal_data_makes_the_request_high_risk_whatever_the_requester_says(people: dict[str, Any]) -> None:
    found = _version(people, b'{"text": "write to ada@example.org"}\n')
    dataset_version_review(actor=people["data_steward"], version=found, decision="confirmed", note="needed")
    request = _submit(people, found, risk_tier="low")
    assert request.context == {"risk_tier": "high"}
    assert [s["role"] for s in request.rule["approvals"]] == ["data_steward", "compliance_officer"]
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    assert ApprovalRequest.objects.get(pk=request.pk).state == ApprovalState.PENDING  # the officer's slot is open

    ruled_out = _version(people, b'{"text": "write to bob@example.org"}\n')
    dataset_version_review(actor=people["data_steward"], version=ruled_out, decision="false_positive", note="test")
    assert [s["role"] for s in _submit(people, ruled_out).rule["approvals"]] == ["data_steward"]
    clean = _submit(people, _version(people), risk_tier="high")  # a requester may still ask for more
    assert [s["role"] for s in clean.rule["approvals"]] == ["data_steward", "compliance_officer"]


@pytest.mark.django_db
def test_a_policy_set_recorded_meanwhile_by_another_process_is_not_recorded_twice(
    people: dict[str, Any], monkeypatch: Any
) -> None:
    from governance.models import PolicySetRecord
    from governance.services import policy_sets

    policies = current_policy_set()
    PolicySetRecord.objects.get_or_create(hash=policies.hash, defaults={"files": policies.files})
    changes = len(_entries(action="policy_set.changed"))
    # The other process commits between this one's read and its insert: the read says "not yet".
    monkeypatch.setattr(policy_sets, "policy_set_recorded", lambda policy_hash: False)
    assert policy_sets.policy_set_in_force().hash == policies.hash
    monkeypatch.undo()
    assert PolicySetRecord.objects.filter(hash=policies.hash).count() == 1
    assert len(_entries(action="policy_set.changed")) == changes
    request = _submit(people, _version(people))  # and decisions go on
    assert (
        approval_request_decide(
            actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok"
        ).state
        == ApprovalState.APPROVED
    )


@pytest.mark.django_db
def test_ids_past_the_databases_integers_are_404_not_500(client: Any, people: dict[str, Any]) -> None:
    from governance.services import api_token_create

    token = api_token_create(actor=people["data_steward"], user=people["data_steward"], name="t")[1]
    for verb, body in (("approve", {"reason": "x"}), ("reject", {"reason": "x"}), ("withdraw", {"reason": "x"}),
                       ("break-glass", {"justification": "x" * 30})):  # fmt: skip
        answer = client.post(
            f"/api/v1/approvals/{2**64}/{verb}", body, content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )  # fmt: skip
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", (verb, answer.content)


@pytest.mark.django_db
def test_two_submissions_at_once_open_one_request(people: dict[str, Any], monkeypatch: Any) -> None:
    from django.db import IntegrityError, transaction
    from django.db.models.query import QuerySet

    version = _version(people)
    first = _submit(people, version)
    fields = {f: getattr(first, f) for f in ("project", "action", "subject_type", "subject_id", "subject_digest",
                                              "rule", "policy_hash", "requester")}  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.create(**fields)  # the database holds one pending request per action on a subject
    # The other submission's check ran before this one committed: the database still refuses it.
    exists = QuerySet.exists
    monkeypatch.setattr(QuerySet, "exists", lambda qs: False if qs.model is ApprovalRequest else exists(qs))
    start = Entry.objects.count()
    with pytest.raises(Conflict) as caught:
        _submit(people, version)
    assert caught.value.code == "already_pending" and Entry.objects.count() == start
    monkeypatch.undo()
    approval_request_withdraw(actor=people["ml_engineer"], request_id=first.pk, reason="resubmit")
    assert _submit(people, version).state == ApprovalState.PENDING  # once closed, a new one may open


@pytest.mark.django_db
def test_an_approver_with_two_of_the_roles_chooses_the_slot(client: Any, people: dict[str, Any]) -> None:
    from governance.services import api_token_create

    def approve(user: Any, **body: str) -> Any:
        token = api_token_create(actor=user, user=user, name="t")[1]
        return client.post(f"/api/v1/approvals/{request.pk}/approve", {"reason": "ok", **body},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")  # fmt: skip

    both = get_user_model().objects.create_user(username="both-hats")
    for role in (Role.DATA_STEWARD, Role.COMPLIANCE_OFFICER):
        project_role_grant(actor=people["system"], project=people["project"], user=both, role=role, reason="test setup")
    request = _submit(people, _version(people), risk_tier="high")
    refused = approve(people["data_steward"], role="compliance_officer")
    assert refused.status_code == 403 and "your slots are data_steward" in refused.json()["error"]["message"]
    assert approve(people["data_steward"], role="platform_admin").status_code == 403
    assert approve(people["data_steward"], role="chief").status_code == 400  # not a role at all
    # The default would take the steward slot and leave the other steward nothing to fill.
    chosen = approve(both, role="compliance_officer")
    assert chosen.status_code == 200 and chosen.json()["decisions"][0]["role"] == "compliance_officer"
    again = approve(people["compliance_officer"], role="compliance_officer")
    assert again.status_code == 409 and "the compliance_officer slot is already filled" in again.content.decode()
    done = approve(people["data_steward"])
    assert done.status_code == 200 and done.json()["state"] == "approved"
    assert [e["payload"]["role"] for e in _entries(action__in=["approval.slot_filled", "approval.approved"])] == [
        "compliance_officer", "data_steward",
    ]  # fmt: skip
