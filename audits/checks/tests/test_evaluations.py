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
    # Each difference with its bootstrap interval under the profile's settings; each group's size.
    dpd = results["metrics"]["demographic_parity_difference"]
    assert dpd["value"] == results["demographic_parity_difference"]
    assert 0 <= dpd["ci_low"] < dpd["value"] < dpd["ci_high"] <= 1
    assert (dpd["level"], dpd["resamples"], dpd["seed"]) == (0.95, 1000, 0)
    sizes = {group: {"records": 10, "too_small": False} for group in ("A", "B")}
    assert results["group_sizes"] == sizes and results["min_group_size"] == 10
    assert any("(95% CI " in r for r in done.reasons)
    assert artifacts.open_blob(done.chart_digest).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    actions = list(
        Entry.objects.filter(subject_type="bias_evaluation", subject_id=str(done.pk)).values_list("action", flat=True)
    )
    assert actions == [
        "bias_evaluation.requested", "bias_evaluation.queued", "bias_evaluation.started", "bias_evaluation.completed"
    ]  # fmt: skip


SAFEGUARDS = ["a", "b", "c", "d", "e", "f"]


def _requested_payload(evaluation: BiasEvaluation) -> dict[str, Any]:
    entry = Entry.objects.get(action="bias_evaluation.requested", subject_id=str(evaluation.pk))
    payload: dict[str, Any] = json.loads(bytes(entry.body))["payload"]
    return payload


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"special_category": "racial_or_ethnic_origin"}, "legal_basis",
         "'group' is special-category data .*: name the legal basis"),
        ({"special_category": "racial_or_ethnic_origin", "legal_basis": "ai_act_art_10_5",
          "safeguards_confirmed": ["a", "b", "c", "d", "e"]}, "safeguards_confirmed", r"missing: \(f\)"),
        ({"special_category": "health", "legal_basis": "consent", "safeguards_confirmed": SAFEGUARDS}, "legal_basis",
         "unknown legal basis 'consent'"),
        ({"special_category": "shoe_size", "legal_basis": "ai_act_art_10_5", "safeguards_confirmed": SAFEGUARDS},
         "special_category", "unknown category 'shoe_size'"),
        ({"legal_basis": "ai_act_art_10_5"}, "legal_basis", "'group' is not marked as special-category data"),
    ],
)  # fmt: skip
def test_special_category_data_without_its_legal_basis_is_refused_naming_the_field(
    audited: dict[str, Any], overrides: dict[str, Any], field: str, message: str
) -> None:
    before = Entry.objects.count()
    with pytest.raises(DomainError, match=message) as caught:
        _request(audited, **overrides)
    assert field in caught.value.fields and caught.value.status_code == 400
    assert BiasEvaluation.objects.count() == 0 and Entry.objects.count() == before


def test_a_feature_the_profile_marks_needs_its_legal_basis_and_it_is_recorded(
    audited: dict[str, Any], tmp_path: Path, settings: Any, client: Any
) -> None:
    from audits.checks.services import audit_digest

    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    bias_file = policies / "audits" / "bias.yaml"
    bias_file.write_text(bias_file.read_text().replace("      ethnicity:", "      group: health\n      ethnicity:"))
    settings.POLICY_DIR = policies
    with pytest.raises(DomainError, match="'group' is special-category data \\(health\\)") as caught:
        _request(audited)  # the requester said nothing: the profile knows better
    assert set(caught.value.fields) == {"legal_basis", "safeguards_confirmed"}
    with pytest.raises(DomainError, match="the profile marks 'group' as 'health', not 'political_opinions'"):
        _request(audited, special_category="political_opinions", legal_basis="ai_act_art_10_5",
                 safeguards_confirmed=SAFEGUARDS)  # fmt: skip

    evaluation = _request(
        audited, legal_basis="ai_act_art_10_5_digital_omnibus", safeguards_confirmed=["f", "a", "b", "c", "d", "e"]
    )

    evaluation.refresh_from_db()
    assert (evaluation.special_category, evaluation.legal_basis) == ("health", "ai_act_art_10_5_digital_omnibus")
    assert evaluation.safeguards_confirmed == SAFEGUARDS
    assert _requested_payload(evaluation)["special_category"] == {
        "category": "health", "legal_basis": "ai_act_art_10_5_digital_omnibus",
        "legal_basis_text": "Art. 10(5) as amended (Digital Omnibus, 2026)", "safeguards_confirmed": SAFEGUARDS,
    }  # fmt: skip
    # A waiver binds to the basis too: the same run recorded under another basis is another digest.
    digest = audit_digest(evaluation)
    evaluation.legal_basis = "ai_act_art_10_5"
    assert audit_digest(evaluation) != digest
    admin_login(client, audited["compliance_officer"])
    page = client.get(f"/admin/checks/biasevaluation/{evaluation.pk}/change/")
    assert b"data concerning health: Art. 10(5) as amended (Digital Omnibus, 2026)" in page.content
    assert b"safeguards confirmed: (a), (b), (c), (d), (e), (f)" in page.content


def test_the_api_takes_the_legal_basis_and_refuses_a_request_without_it(audited: dict[str, Any]) -> None:
    from django.test import Client

    from governance.services import api_token_create

    token = api_token_create(actor=audited["system"], user=audited["ml_engineer"], name="t")[1]
    api = Client(HTTP_AUTHORIZATION=f"Token {token}")
    body = {
        "profile": "default", "dataset_version": audited["evaluation_version"].pk,
        "prompt_template": audited["template"].pk, "label_field": "label", "sensitive_feature": "group",
        "label_mapping": MAPPING, "special_category": "racial_or_ethnic_origin",
    }  # fmt: skip
    url = f"/api/v1/model-versions/{audited['base'].pk}/bias-evaluations/"

    refused = api.post(url, body, content_type="application/json")

    assert refused.status_code == 400, refused.content
    assert "legal_basis" in refused.json()["error"]["fields"]
    created = api.post(
        url, {**body, "legal_basis": "ai_act_art_10_5", "safeguards_confirmed": SAFEGUARDS},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    detail = created.json()
    assert (detail["special_category"], detail["legal_basis"]) == ("racial_or_ethnic_origin", "ai_act_art_10_5")
    assert detail["safeguards_confirmed"] == SAFEGUARDS
    bad = api.post(url, {**body, "legal_basis": "legitimate_interest"}, content_type="application/json")
    assert bad.status_code == 400 and "legal_basis" in bad.json()["error"]["fields"]


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
    first = _run(
        _request(audited, special_category="racial_or_ethnic_origin", legal_basis="ai_act_art_10_5",
                 safeguards_confirmed=SAFEGUARDS)
    )  # fmt: skip
    assert first.verdict == Verdict.PASSED, first.reasons
    assert audits_rescan_due(actor=audited["system"]) == []  # not due yet
    BiasEvaluation.objects.filter(pk=first.pk).update(finished_at=timezone.now() - timedelta(days=31))
    stricter = loose.replace("demographic_parity_difference: 0.9", "demographic_parity_difference: 0.1")
    bias_file.write_text(stricter.replace("min_group_size: 10", "min_group_size: 11"))
    [rerun] = audits_rescan_due(actor=audited["system"])
    assert rerun.trigger == Trigger.SCHEDULE and rerun.state == AuditState.QUEUED
    assert (rerun.special_category, rerun.legal_basis, rerun.safeguards_confirmed) == (
        "racial_or_ethnic_origin", "ai_act_art_10_5", SAFEGUARDS,
    )  # the re-run repeats the basis on record  # fmt: skip
    done = _run(rerun)
    assert done.verdict == Verdict.FAILED and done.regression_of_id == first.pk
    # Groups of 10 under a minimum of 11: each said to be too small, before the bound it breaks.
    assert done.reasons[:2] == [
        f"group {group!r} of group has 10 evaluated records, fewer than the minimum of 11: too small to conclude"
        for group in ("A", "B")
    ]
    assert done.reasons[2].startswith("demographic_parity_difference 0.500 is above the bound 0.100 (95% CI ")
    assert done.results["small_groups"] == ["A", "B"]
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
