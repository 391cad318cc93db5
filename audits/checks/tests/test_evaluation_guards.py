"""What changes between a bias evaluation's request and its run: the dataset version erased, its
approval for evaluation lapsed, its bytes gone from the store. Each fails the evaluation on record
with the reason, never leaves it ``running``. And ids in a request (or a subject id) that the
caller may not see, or that no row can have, answer like missing ones."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.checks.governed import _getter
from audits.checks.models import AuditState, BiasEvaluation
from audits.checks.services import bias_evaluation_execute, bias_evaluation_request
from audits.checks.tests.conftest import MAPPING
from audits.ledger.models import Entry
from common import artifacts
from common.errors import DomainError
from governance.models import ApprovalRequest
from governance.services import api_token_create, approval_request_submit
from training.tests.conftest import elsewhere, ready  # noqa: F401  (the fixtures, shared)

pytestmark = pytest.mark.django_db


def _request(audited: dict[str, Any]) -> BiasEvaluation:
    evaluation = bias_evaluation_request(
        actor=audited["ml_engineer"], model_version=audited["base"], dataset_version=audited["evaluation_version"],
        prompt_template=audited["template"], label_field="label", sensitive_feature="group", label_mapping=MAPPING,
        profile_name="default",
    )  # fmt: skip
    assert evaluation.state == AuditState.QUEUED
    return evaluation


def _run(evaluation: BiasEvaluation) -> BiasEvaluation:
    evaluation.refresh_from_db()
    done = bias_evaluation_execute(
        evaluation_id=evaluation.pk, idempotency_key=str(evaluation.idempotency_key), worker="test"
    )
    assert done is not None
    return done


def _failed_on_record(done: BiasEvaluation) -> dict[str, Any]:
    """The evaluation failed, closed, with its end in the ledger; returns that entry's payload."""
    assert done.state == AuditState.FAILED and done.finished_at is not None
    entries = Entry.objects.filter(subject_type="bias_evaluation", subject_id=str(done.pk)).order_by("index")
    assert list(entries.values_list("action", flat=True))[-2:] == ["bias_evaluation.started", "bias_evaluation.failed"]
    payload: dict[str, Any] = json.loads(bytes(entries.last().body))["payload"]
    assert payload["failure_reason"] == done.failure_reason
    return payload


def test_an_evaluation_whose_dataset_version_was_erased_after_the_request_fails_on_record(
    audited: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    from registry.services import _blob_delete_unless_live, dataset_version_erase_records

    evaluation = _request(audited)
    version = audited["evaluation_version"]
    with django_capture_on_commit_callbacks() as after_commit:
        dataset_version_erase_records(
            actor=audited["compliance_officer"], version=version, record_numbers={1}, reason="Art. 17 request"
        )
    for deletion in [c for c in after_commit if getattr(c, "func", None) is _blob_delete_unless_live]:
        deletion()  # what the erasure's commit does: the old bytes leave the store
    assert not artifacts.blob_path(version.sha256).exists()

    done = _run(evaluation)
    _failed_on_record(done)
    assert done.failure_reason.startswith(f"dataset version {version.pk} may not be used: erased (Art. 17 request)")
    assert done.report_digest == "" and done.results == {}


def test_an_evaluation_whose_dataset_approval_lapsed_after_the_request_fails_on_record(
    audited: dict[str, Any],
) -> None:
    evaluation = _request(audited)
    ApprovalRequest.objects.filter(action="dataset_version.use_for_evaluation").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    done = _run(evaluation)
    _failed_on_record(done)
    assert "has no approval for dataset_version.use_for_evaluation as it is now" in done.failure_reason


def test_an_evaluation_whose_dataset_bytes_left_the_store_fails_on_record(audited: dict[str, Any]) -> None:
    evaluation = _request(audited)
    blob = artifacts.blob_path(audited["evaluation_version"].sha256)
    original = blob.read_bytes()  # the store is shared by every test: put the bytes back after
    blob.unlink()
    try:
        done = _run(evaluation)
    finally:
        artifacts.put_bytes(original)
    _failed_on_record(done)
    assert done.failure_reason.startswith(f"dataset version {audited['evaluation_version'].pk}: blob ")
    assert done.failure_reason.endswith("is missing from the artifact store")


def test_a_request_whose_dataset_bytes_left_the_store_is_refused_and_changes_nothing(audited: dict[str, Any]) -> None:
    version = audited["evaluation_version"]
    blob = artifacts.blob_path(version.sha256)
    original = blob.read_bytes()
    blob.unlink()
    before = Entry.objects.count()
    try:
        with pytest.raises(DomainError, match=f"dataset version {version.pk}: blob .* is missing") as caught:
            bias_evaluation_request(
                actor=audited["ml_engineer"], model_version=audited["base"], dataset_version=version,
                prompt_template=audited["template"], label_field="label", sensitive_feature="group",
                label_mapping=MAPPING, profile_name="default",
            )  # fmt: skip
    finally:
        artifacts.put_bytes(original)
    assert caught.value.code == "blob_missing" and caught.value.status_code == 409
    assert BiasEvaluation.objects.count() == 0 and Entry.objects.count() == before


@pytest.mark.parametrize(
    ("field", "key"), [("dataset_version", "dataset_version"), ("prompt_template", "prompt_template")]
)
def test_an_id_of_a_project_the_caller_cannot_see_answers_like_a_missing_one(
    audited: dict[str, Any],
    elsewhere: dict[str, Any],  # noqa: F811
    field: str,
    key: str,
) -> None:
    token = api_token_create(actor=audited["system"], user=audited["ml_engineer"], name="t")[1]
    engineer = Client(HTTP_AUTHORIZATION=f"Token {token}")
    body = {
        "profile": "default", "dataset_version": audited["evaluation_version"].pk,
        "prompt_template": audited["template"].pk, "label_field": "label", "sensitive_feature": "group",
        "label_mapping": MAPPING,
    }  # fmt: skip

    def answer(pk: int) -> tuple[int, str]:
        response = engineer.post(
            f"/api/v1/model-versions/{audited['base'].pk}/bias-evaluations/", {**body, field: pk},
            content_type="application/json",
        )  # fmt: skip
        return response.status_code, json.dumps(response.json(), sort_keys=True)

    before = Entry.objects.count()
    hidden = elsewhere[key].pk
    missing_status, missing = answer(999999)
    hidden_status, hidden_body = answer(hidden)
    assert hidden_status == missing_status == 400
    assert hidden_body == missing.replace("999999", str(hidden)), hidden_body
    assert BiasEvaluation.objects.count() == 0 and Entry.objects.count() == before


@pytest.mark.parametrize("kind", ["security_scan", "bias_evaluation"])
@pytest.mark.parametrize("subject_id", ["²", "\u0661", str(2**63), str(2**64), "-1", ""])
def test_an_audit_id_that_is_no_ascii_number_in_range_names_no_audit(
    ready: dict[str, Any],  # noqa: F811
    kind: str,
    subject_id: str,
) -> None:
    assert _getter({"security_scan": "SecurityScan", "bias_evaluation": "BiasEvaluation"}[kind])(subject_id) is None
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=f"no {kind}") as caught:
        approval_request_submit(
            actor=ready["ml_engineer"], subject_type=kind, subject_id=subject_id, action=f"{kind}.waive"
        )
    assert caught.value.status_code == 404 and Entry.objects.count() == before
