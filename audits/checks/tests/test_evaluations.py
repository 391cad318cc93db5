"""Bias evaluations in process, with the real tiny model answering and fairlearn measuring:
the numbers equal fairlearn's own on the same predictions, the bound fails as it should, bad
input is refused naming the problem, and a scheduled re-run that regresses opens a review."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from audits.checks.models import AuditState, BiasEvaluation, Trigger, Verdict
from audits.checks.services import audits_rescan_due, bias_evaluation_execute, bias_evaluation_request
from audits.checks.tests.conftest import MAPPING, evaluation_records
from audits.ledger.models import Entry
from common import artifacts
from common.errors import DomainError
from common.testing import admin_login
from governance.models import ApprovalRequest

pytestmark = pytest.mark.django_db


def _request(audited: dict[str, Any], **overrides: Any) -> BiasEvaluation:
    arguments: dict[str, Any] = {
        "actor": audited["ml_engineer"], "model_version": audited["base"],
        "dataset_version": audited["evaluation_version"], "prompt_template": audited["template"],
        "label_field": "label", "sensitive_feature": "group", "label_mapping": MAPPING, "profile_name": "default",
    }  # fmt: skip
    arguments.update(overrides)
    return bias_evaluation_request(**arguments)


def _run(evaluation: BiasEvaluation) -> BiasEvaluation:
    evaluation.refresh_from_db()
    done = bias_evaluation_execute(
        evaluation_id=evaluation.pk, idempotency_key=str(evaluation.idempotency_key), worker="test"
    )
    assert done is not None
    return done


def test_an_evaluation_reports_fairlearns_numbers_and_fails_the_bound(audited: dict[str, Any]) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        selection_rate,
    )

    done = _run(_request(audited))
    assert done.state == AuditState.COMPLETED, done.failure_reason
    assert done.verdict == Verdict.FAILED
    assert any(r.startswith("demographic_parity_difference 0.500 is above the bound 0.100") for r in done.reasons)

    # fairlearn called directly on the predictions the model made (the stored answers).
    report = json.loads(artifacts.open_blob(done.report_digest).read_bytes())
    records = evaluation_records()
    kept = [(r, MAPPING[a.strip()]) for r, a in zip(records, report["answers"], strict=True) if a.strip() in MAPPING]
    assert len(kept) == len(records) - 2 and report["unparsed_records"] == [21, 22]
    y_true = [int(r["label"]) for r, _ in kept]
    y_pred = [int(p) for _, p in kept]
    groups = [r["group"] for r, _ in kept]
    results = done.results
    assert results["unparsed"] == 2 and results["evaluated"] == 20
    expected_dpd = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    assert expected_dpd == pytest.approx(0.5)
    assert results["demographic_parity_difference"] == pytest.approx(expected_dpd, abs=1e-6)
    expected_eod = equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    assert results["equalized_odds_difference"] == pytest.approx(expected_eod, abs=1e-6)
    frame = MetricFrame(metrics=selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    for group, value in frame.by_group.items():
        assert results["by_group"]["selection_rate"][group] == pytest.approx(value, abs=1e-6)
    assert artifacts.open_blob(done.chart_digest).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    actions = list(
        Entry.objects.filter(subject_type="bias_evaluation", subject_id=str(done.pk)).values_list("action", flat=True)
    )
    assert actions == [
        "bias_evaluation.requested", "bias_evaluation.queued", "bias_evaluation.started", "bias_evaluation.completed"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sensitive_feature": "gender"}, "record 1 of dataset version .* has no field 'gender'"),
        ({"label_field": "outcome"}, "has no field 'outcome'"),
        ({"label_mapping": {}}, "label_mapping: labels: the mapping needs at least one answer pattern"),
        ({"profile_name": "strictest"}, "no bias profile 'strictest'; known: default"),
    ],
)
def test_bad_evaluation_requests_are_refused_and_change_nothing(
    audited: dict[str, Any], overrides: dict[str, Any], message: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=message):
        _request(audited, **overrides)
    assert BiasEvaluation.objects.count() == 0 and Entry.objects.count() == before


def test_a_dataset_not_approved_for_evaluation_is_refused(audited: dict[str, Any]) -> None:
    ApprovalRequest.objects.filter(action="dataset_version.use_for_evaluation").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(DomainError, match=r"no approval for dataset_version\.use_for_evaluation") as caught:
        _request(audited)
    assert caught.value.status_code == 409


def test_weights_that_no_longer_match_their_digest_are_refused(audited: dict[str, Any]) -> None:
    from audits.checks.services import security_scan_request

    base = audited["base"]
    blob = artifacts.blob_path(base.files["model.safetensors"])
    blob.chmod(0o644)
    original = blob.read_bytes()  # the store is shared by every test: put the bytes back after
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    try:
        for request in (lambda: _request(audited), lambda: security_scan_request(
            actor=audited["ml_engineer"], model_version=base, profile_name="smoke")):  # fmt: skip
            with pytest.raises(DomainError, match=r"model\.safetensors no longer matches its digest") as caught:
                request()
            assert caught.value.code == "weights_mismatch" and caught.value.status_code == 409
    finally:
        blob.write_bytes(original)
    assert BiasEvaluation.objects.count() == 0


def test_a_scheduled_rerun_that_regresses_opens_a_review(
    audited: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    bias_file = policies / "audits" / "bias.yaml"
    loose = bias_file.read_text().replace("demographic_parity_difference: 0.1", "demographic_parity_difference: 0.9")
    bias_file.write_text(loose.replace("equalized_odds_difference: 0.2", "equalized_odds_difference: 0.9"))
    settings.POLICY_DIR = policies
    first = _run(_request(audited))
    assert first.verdict == Verdict.PASSED, first.reasons
    assert audits_rescan_due(actor=audited["system"]) == []  # not due yet
    BiasEvaluation.objects.filter(pk=first.pk).update(finished_at=timezone.now() - timedelta(days=31))
    bias_file.write_text(loose.replace("demographic_parity_difference: 0.9", "demographic_parity_difference: 0.1"))
    [rerun] = audits_rescan_due(actor=audited["system"])
    assert rerun.trigger == Trigger.SCHEDULE and rerun.state == AuditState.QUEUED
    done = _run(rerun)
    assert done.verdict == Verdict.FAILED and done.regression_of_id == first.pk
    review = ApprovalRequest.objects.get(subject_type="bias_evaluation", subject_id=str(done.pk))
    assert review.action == "bias_evaluation.waive" and review.state == "pending"
    assert review.comment.startswith(f"regression: bias_evaluation {first.pk} passed")
    assert Entry.objects.filter(action="bias_evaluation.regression", subject_id=str(done.pk)).count() == 1


def test_reviewers_see_evaluations_with_their_chart_in_the_admin(audited: dict[str, Any], client: Any) -> None:
    done = _run(_request(audited))
    admin_login(client, audited["compliance_officer"])
    assert client.get("/admin/checks/biasevaluation/").status_code == 200
    page = client.get(f"/admin/checks/biasevaluation/{done.pk}/change/")
    assert page.status_code == 200
    assert f"/api/v1/bias-evaluations/{done.pk}/chart".encode() in page.content
    assert b"demographic_parity_difference 0.500" in page.content
    assert client.get(f"/api/v1/bias-evaluations/{done.pk}/chart").status_code == 200  # the session is enough
    assert client.get("/admin/checks/securityscan/").status_code == 200
