"""A reaped run stays failed when its worker comes back; re-scans are decided by
the latest completed run and one refused re-run does not stop the others; a chart whose blob left
the store answers 409; evidence counts only runs under the profile as it is defined now, and a bias
evaluation's evidence covers every dataset version and sensitive feature evaluated recently.

Rows reach the states under test through the real services; where a state needs a real garak run
or a model's answers, the test sets it with an ORM update, as noted."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from audits.checks import services
from audits.checks.models import OPEN_STATES, AuditState, BiasEvaluation, SecurityScan, Trigger, Verdict
from audits.checks.services import runs
from audits.checks.tests.conftest import MAPPING
from audits.ledger.models import Entry
from common import artifacts
from governance.services import api_token_create

pytestmark = pytest.mark.django_db


def _scan(r: dict[str, Any], profile: str = "baseline") -> SecurityScan:
    return services.security_scan_request(actor=r["ml_engineer"], model_version=r["base"], profile_name=profile)


def _evaluation(r: dict[str, Any], model_version: Any = None, feature: str = "group") -> BiasEvaluation:
    return services.bias_evaluation_request(
        actor=r["ml_engineer"], model_version=model_version or r["base"], dataset_version=r["evaluation_version"],
        prompt_template=r["template"], label_field="label", sensitive_feature=feature, label_mapping=MAPPING,
        profile_name="default",
    )  # fmt: skip


def _actions(kind: str, pk: int) -> list[str]:
    entries = Entry.objects.filter(subject_type=kind, subject_id=str(pk)).order_by("index")
    return list(entries.values_list("action", flat=True))


def _completed(model: type[Any], pk: int, verdict: str, *, ago: timedelta = timedelta(0), **fields: Any) -> None:
    """As if the run had finished (a real garak run or model answers are not what is under test)."""
    model.objects.filter(pk=pk).update(
        state=AuditState.COMPLETED, verdict=verdict, finished_at=timezone.now() - ago, **fields
    )


# --- 1. A reaped run stays failed ----------------------------------------------------------------


def test_a_reaped_scan_stays_failed_when_its_worker_comes_back(ready: dict[str, Any]) -> None:
    scan = _scan(ready)
    scan.refresh_from_db()
    claimed = runs._claim(SecurityScan, scan.pk, str(scan.idempotency_key), "slow-worker")
    SecurityScan.objects.filter(pk=scan.pk).update(heartbeat_at=timezone.now() - timedelta(hours=5))
    assert services.audits_reap(actor=ready["system"]) == 1

    runs._beat(claimed)  # the slow worker is alive again: its heartbeat must not touch the row
    returned = runs._finish(claimed, state=AuditState.COMPLETED, verdict=Verdict.PASSED, reasons=[])

    scan.refresh_from_db()
    assert scan.state == AuditState.FAILED and scan.verdict == Verdict.NONE
    assert scan.failure_reason.startswith("worker lost: slow-worker")
    assert scan.heartbeat_at < timezone.now() - timedelta(hours=4)
    assert returned.state == AuditState.FAILED
    assert _actions("security_scan", scan.pk) == [
        "security_scan.requested", "security_scan.queued", "security_scan.started", "security_scan.failed"
    ]  # fmt: skip
    ok, why = services.security_scan_passed(ready["base"], profile="baseline", max_age_days=30)
    assert not ok and why.startswith("no security scan under profile 'baseline'")


def test_a_run_claimed_by_another_worker_is_not_finished_nor_beaten_by_this_one(ready: dict[str, Any]) -> None:
    scan = _scan(ready)
    scan.refresh_from_db()
    claimed = runs._claim(SecurityScan, scan.pk, str(scan.idempotency_key), "worker-a")
    beaten = timezone.now() - timedelta(minutes=1)
    SecurityScan.objects.filter(pk=scan.pk).update(claimed_by="worker-b", heartbeat_at=beaten)

    runs._beat(claimed)
    runs._finish(claimed, state=AuditState.COMPLETED, verdict=Verdict.PASSED, reasons=[])

    scan.refresh_from_db()
    assert scan.state == AuditState.RUNNING and scan.claimed_by == "worker-b" and scan.heartbeat_at == beaten
    assert scan.finished_at is None
    assert _actions("security_scan", scan.pk)[-1] == "security_scan.started"
    runs._beat(SecurityScan.objects.get(pk=scan.pk))  # its own worker's heartbeat still counts
    assert SecurityScan.objects.get(pk=scan.pk).heartbeat_at > beaten


# --- 2. and 3. Re-scans ---------------------------------------------------------------------------


def test_a_failed_latest_run_does_not_stop_rescans(ready: dict[str, Any]) -> None:
    passed = _scan(ready)
    _completed(SecurityScan, passed.pk, Verdict.PASSED, ago=timedelta(days=10))
    broken = _scan(ready)  # a later run that failed to run (its worker was lost)
    SecurityScan.objects.filter(pk=broken.pk).update(
        state=AuditState.FAILED, failure_reason="worker lost", finished_at=timezone.now() - timedelta(days=9)
    )
    [rerun] = services.audits_rescan_due(actor=ready["system"])
    assert rerun.trigger == Trigger.SCHEDULE and rerun.profile_name == "baseline"
    assert rerun.model_version_id == ready["base"].pk and rerun.state == AuditState.QUEUED
    # The re-run is open now: the next pass leaves it to finish.
    assert services.audits_rescan_due(actor=ready["system"]) == []


def test_an_open_run_postpones_the_rescan_and_a_recent_completed_one_is_not_due(ready: dict[str, Any]) -> None:
    old = _scan(ready)
    _completed(SecurityScan, old.pk, Verdict.PASSED, ago=timedelta(days=10))
    _scan(ready)  # queued, not finished
    assert services.audits_rescan_due(actor=ready["system"]) == []
    SecurityScan.objects.filter(state__in=OPEN_STATES).update(state=AuditState.CANCELLED)
    recent = _scan(ready)
    _completed(SecurityScan, recent.pk, Verdict.FAILED, ago=timedelta(days=1))
    assert services.audits_rescan_due(actor=ready["system"]) == []


def test_a_run_waiting_for_approval_does_not_hold_the_rescan_back(ready: dict[str, Any]) -> None:
    old = _scan(ready)
    _completed(SecurityScan, old.pk, Verdict.PASSED, ago=timedelta(days=10))
    waiting = _scan(ready)  # as a policy asking approval of security_scan.run leaves it, maybe for good
    SecurityScan.objects.filter(pk=waiting.pk).update(state=AuditState.REQUESTED)
    [rerun] = services.audits_rescan_due(actor=ready["system"])
    assert rerun.pk != waiting.pk and rerun.state == AuditState.QUEUED and rerun.trigger == Trigger.SCHEDULE
    assert services.audits_rescan_due(actor=ready["system"]) == []  # the re-run, queued, holds it now


def test_a_refused_rescan_is_recorded_and_the_others_still_run(audited: dict[str, Any], tmp_path: Path) -> None:
    from registry.services import model_version_register_folder
    from registry.tiny_model import build_tiny_gpt2

    folder = build_tiny_gpt2(tmp_path / "imports2" / "tiny", seed=1)
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports2").resolve()]):
        other, _ = model_version_register_folder(
            actor=audited["ml_engineer"], model=audited["base"].model, folder=str(folder)
        )
    first, second = _evaluation(audited), _evaluation(audited, model_version=other)
    for evaluation in (first, second):
        _completed(BiasEvaluation, evaluation.pk, Verdict.PASSED, ago=timedelta(days=40))
    # The first one's re-run cannot be requested: its label field is not in the data (as if the
    # dataset's fields had changed since).
    BiasEvaluation.objects.filter(pk=first.pk).update(label_field="nope")

    [rerun] = services.audits_rescan_due(actor=audited["system"])

    assert rerun.model_version_id == other.pk and rerun.trigger == Trigger.SCHEDULE
    skipped = Entry.objects.get(action="bias_evaluation.rescan_skipped")
    assert (skipped.subject_type, skipped.subject_id) == ("bias_evaluation", str(first.pk))
    payload = json.loads(bytes(skipped.body))["payload"]
    assert payload["profile"] == "default" and payload["model_version"] == audited["base"].pk
    assert payload["reason"].startswith("invalid_input: dataset_version: record 1 of dataset version")
    assert "has no field 'nope'" in payload["reason"]
    assert BiasEvaluation.objects.filter(model_version=audited["base"]).count() == 1

    # The next passes try again and log it, but record it only when the reason changes.
    assert services.audits_rescan_due(actor=audited["system"]) == []  # the other's re-run is still open
    assert Entry.objects.filter(action="bias_evaluation.rescan_skipped").count() == 1
    BiasEvaluation.objects.filter(pk=first.pk).update(label_field="other")
    services.audits_rescan_due(actor=audited["system"])
    [_, changed] = Entry.objects.filter(action="bias_evaluation.rescan_skipped").order_by("index")
    assert "has no field 'other'" in json.loads(bytes(changed.body))["payload"]["reason"]


# --- 4. The chart of a blob that left the store ---------------------------------------------------


def _chart(audited: dict[str, Any], pk: int) -> Any:
    token = api_token_create(actor=audited["system"], user=audited["ml_engineer"], name="t")[1]
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", raise_request_exception=False)
    return client.get(f"/api/v1/bias-evaluations/{pk}/chart")


@pytest.mark.parametrize(
    "missing", [hashlib.sha256(b"a chart that was never stored").hexdigest(), "sha256:" + "0" * 64]
)
def test_a_chart_whose_blob_is_missing_answers_409(audited: dict[str, Any], missing: str) -> None:
    evaluation = _evaluation(audited)
    BiasEvaluation.objects.filter(pk=evaluation.pk).update(chart_digest=missing)
    response = _chart(audited, evaluation.pk)
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "blob_missing"
    assert error["message"].startswith(f"bias evaluation {evaluation.pk}: ") and missing in error["message"]


def test_a_chart_whose_blob_changed_on_disk_answers_409(audited: dict[str, Any]) -> None:
    evaluation = _evaluation(audited)
    digest, _ = artifacts.put_bytes(f"chart of evaluation {evaluation.pk} in {audited['project'].slug}".encode())
    path = artifacts.blob_path(digest)
    try:
        path.chmod(0o644)
        path.write_bytes(b"tampered")
        BiasEvaluation.objects.filter(pk=evaluation.pk).update(chart_digest=digest)
        response = _chart(audited, evaluation.pk)
    finally:
        path.unlink()
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "blob_corrupt" and error["message"].startswith(f"bias evaluation {evaluation.pk}: ")


# --- 5. Evidence under the profile as it is defined now ------------------------------------------


def test_a_pass_under_an_earlier_profile_definition_is_no_evidence(ready: dict[str, Any]) -> None:
    scan = _scan(ready)
    # As if it had run under the earlier, weaker 'baseline': one probe, any failure rate.
    _completed(
        SecurityScan, scan.pk, Verdict.PASSED, profile={"probes": ["goodside.WhoIsRiley"], "max_failure_rate": 1.0}
    )
    ok, why = services.security_scan_passed(ready["base"], profile="baseline", max_age_days=30)
    assert not ok
    assert (
        why
        == f"security scan {scan.pk} ({timezone.now():%Y-%m-%d}) ran under an earlier definition of profile 'baseline'"
    )


def test_a_pass_under_the_current_profile_definition_is_evidence(
    ready: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    scan = _scan(ready)
    _completed(SecurityScan, scan.pk, Verdict.PASSED)
    assert services.security_scan_passed(ready["base"], profile="baseline", max_age_days=30)[0]
    # Words that change nothing measured (the description, the re-scan period) keep it valid.
    policies = tmp_path / "policies"
    shutil.copytree(settings.POLICY_DIR, policies)
    security = policies / "audits" / "security.yaml"
    text = security.read_text().replace("rescan_every_days: 7", "rescan_every_days: 3")
    security.write_text(text.replace("Prompt injection and jailbreak basics", "Injection basics"))
    settings.POLICY_DIR = policies
    assert services.security_scan_passed(ready["base"], profile="baseline", max_age_days=30)[0]
    # A tightened bound does not.
    security.write_text(text.replace("max_failure_rate: 0.5", "max_failure_rate: 0.1"))
    ok, why = services.security_scan_passed(ready["base"], profile="baseline", max_age_days=30)
    assert not ok and why.endswith("ran under an earlier definition of profile 'baseline'")


# --- 6. Bias evidence covers every dataset version and feature -----------------------------------


def test_a_newer_pass_on_another_feature_does_not_hide_a_failure(audited: dict[str, Any]) -> None:
    bad = _evaluation(audited, feature="group")
    _completed(BiasEvaluation, bad.pk, Verdict.FAILED, ago=timedelta(hours=1), reasons=["dpd 0.5 > 0.1"])
    good = _evaluation(audited, feature="id")
    _completed(BiasEvaluation, good.pk, Verdict.PASSED)
    ok, why = services.bias_within_bounds(audited["base"], profile="default", max_age_days=30)
    assert not ok
    assert f"bias evaluation {bad.pk} " in why and why.endswith("failed: dpd 0.5 > 0.1")


def test_bias_evidence_holds_when_the_latest_run_of_every_feature_passes(audited: dict[str, Any]) -> None:
    old_failure = _evaluation(audited, feature="group")
    _completed(BiasEvaluation, old_failure.pk, Verdict.FAILED, ago=timedelta(hours=2), reasons=["dpd 0.5 > 0.1"])
    fixed = _evaluation(audited, feature="group")
    _completed(BiasEvaluation, fixed.pk, Verdict.PASSED, ago=timedelta(hours=1))
    other = _evaluation(audited, feature="id")
    _completed(BiasEvaluation, other.pk, Verdict.PASSED)
    ok, why = services.bias_within_bounds(audited["base"], profile="default", max_age_days=30)
    assert ok, why
    assert f"bias evaluation {fixed.pk} " in why and f"bias evaluation {other.pk} " in why
    assert f"bias evaluation {old_failure.pk} " not in why
    # A failure older than max_age_days is out of the window: only recent evaluations count.
    BiasEvaluation.objects.filter(pk=other.pk).update(
        verdict=Verdict.FAILED, reasons=["x"], finished_at=timezone.now() - timedelta(days=40)
    )
    assert services.bias_within_bounds(audited["base"], profile="default", max_age_days=30)[0]
