"""A scan fails on record at once, with the real reason, whatever
goes wrong while it runs; a queued audit whose message was lost is sent again; a label mapping
that never yields the profile's positive label is refused when the evaluation is requested.

No test here runs garak: where a scan must get past garak, the test replaces the call site
(``garak_scan.run_scan``) with a stand-in, as each test says."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audits.checks import garak_scan, services
from audits.checks.models import AuditState, BiasEvaluation, SecurityScan, Verdict
from audits.checks.services import runs
from audits.ledger.models import Entry
from common.errors import DomainError
from common.outbox.models import OutboxJob
from governance.services import api_token_create

pytestmark = pytest.mark.django_db


def _scan(r: dict[str, Any]) -> SecurityScan:
    scan = services.security_scan_request(actor=r["ml_engineer"], model_version=r["base"], profile_name="baseline")
    scan.refresh_from_db()
    return scan


def _actions(kind: str, pk: int) -> list[str]:
    entries = Entry.objects.filter(subject_type=kind, subject_id=str(pk)).order_by("index")
    return list(entries.values_list("action", flat=True))


def _execute(scan: SecurityScan) -> SecurityScan | None:
    return services.security_scan_execute(scan_id=scan.pk, idempotency_key=str(scan.idempotency_key), worker="w1")


# --- 1. Any error fails the scan at once, with its reason ----------------------------------------


def test_an_error_inside_garak_fails_the_scan_at_once_with_its_reason(
    ready: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The garak call site (``garak_scan.run_scan``) is replaced by one that raises what reading
    garak's version raises when its metadata is broken: a RuntimeError."""
    scan = _scan(ready)

    def broken_garak(**_: Any) -> Any:
        raise RuntimeError("garak's package metadata is unreadable")

    monkeypatch.setattr(garak_scan, "run_scan", broken_garak)
    with caplog.at_level(logging.ERROR, logger="audits.checks.services"):
        done = _execute(scan)  # the worker lives on: nothing propagates

    scan.refresh_from_db()
    assert done is not None and done.state == AuditState.FAILED
    assert scan.state == AuditState.FAILED and scan.verdict == Verdict.NONE and scan.finished_at is not None
    assert scan.failure_reason == "RuntimeError: garak's package metadata is unreadable"
    assert any(r.exc_info and f"security scan {scan.pk} failed" in r.getMessage() for r in caplog.records)
    assert _actions("security_scan", scan.pk) == [
        "security_scan.requested", "security_scan.queued", "security_scan.started", "security_scan.failed"
    ]  # fmt: skip
    failed = Entry.objects.filter(subject_type="security_scan", subject_id=str(scan.pk)).order_by("index").last()
    assert json.loads(bytes(failed.body))["payload"]["failure_reason"] == scan.failure_reason
    assert services.audits_reap(actor=ready["system"]) == 0  # nothing left for the reaper to call "worker lost"
    assert not (Path(settings.TRAINING_WORK_ROOT) / f"scan-{scan.pk}" / "model").exists()


def test_a_report_the_artifact_store_cannot_take_fails_the_scan_at_once(
    ready: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real artifact store fails: while the scan runs, ``ARTIFACT_ROOT`` becomes a plain file,
    so storing the report raises an OSError. garak's call site is replaced by a stand-in that
    writes a report and returns its outcome (no garak runs)."""
    scan = _scan(ready)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the artifact store should be")

    def fake_garak(*, workdir: Path, **_: Any) -> garak_scan.ScanOutcome:
        report = workdir / "reports" / "scan.report.jsonl"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text('{"entry_type": "init"}\n')
        settings.ARTIFACT_ROOT = str(blocked)  # the model is read; now the store breaks
        return garak_scan.ScanOutcome(
            returncode=0, report_path=report, findings=[], garak_version="0.0", seconds=0.1, log_tail="",
            completed=True,
        )  # fmt: skip

    monkeypatch.setattr(garak_scan, "run_scan", fake_garak)
    done = _execute(scan)

    scan.refresh_from_db()
    assert done is not None and scan.state == AuditState.FAILED and scan.report_digest == ""
    assert scan.failure_reason.startswith(("NotADirectoryError: ", "FileExistsError: ")), scan.failure_reason
    assert _actions("security_scan", scan.pk)[-1] == "security_scan.failed"


# --- 3. A queued audit whose message was lost is sent again --------------------------------------


def _jobs(scan: SecurityScan) -> list[OutboxJob]:
    return [job for job in OutboxJob.objects.filter(task="checks.security_scan") if job.args[0] == scan.pk]


def test_a_queued_audit_whose_message_was_lost_is_sent_again_with_its_key(ready: dict[str, Any], settings: Any) -> None:
    """The lost message is simulated by ageing the queued row (an ORM update of ``created_at``)."""
    scan = _scan(ready)
    fresh = _scan(ready)
    key = str(scan.idempotency_key)
    assert len(_jobs(scan)) == 1
    entries = Entry.objects.count()
    timeout = settings.TRAINING_HEARTBEAT_TIMEOUT_S
    SecurityScan.objects.filter(pk=scan.pk).update(created_at=timezone.now() - timedelta(seconds=timeout + 60))

    assert services.audits_reap(actor=ready["system"]) == 1
    jobs = _jobs(scan)
    assert len(jobs) == 2 and jobs[-1].args == [scan.pk, key] and jobs[-1].queue == jobs[0].queue
    assert len(_jobs(fresh)) == 1  # not yet stale
    scan.refresh_from_db()
    assert scan.state == AuditState.QUEUED and str(scan.idempotency_key) == key
    assert Entry.objects.count() == entries  # nothing new in the ledger, as the registry's reaper

    assert services.audits_reap(actor=ready["system"]) == 0  # once per period, not on every pass
    SecurityScan.objects.filter(pk=scan.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=timeout + 60))
    assert services.audits_reap(actor=ready["system"]) == 1 and len(_jobs(scan)) == 3

    # Every delivery carries the one key: the first claims the scan, the others find it taken.
    assert runs._claim(SecurityScan, scan.pk, key, "w1") is not None
    assert runs._claim(SecurityScan, scan.pk, key, "w2") is None
    SecurityScan.objects.filter(pk=scan.pk).update(heartbeat_at=timezone.now())
    assert services.audits_reap(actor=ready["system"]) == 0


# --- 4. A label mapping without the positive label is refused at request time --------------------


def test_a_label_mapping_without_the_positive_label_is_refused_when_requested(audited: dict[str, Any]) -> None:
    mapping = {"erererer": "approve", "ndndndnd": "0"}  # the profile's positive label is "1"
    token = api_token_create(actor=audited["system"], user=audited["ml_engineer"], name="t")[1]
    entries = Entry.objects.count()
    with pytest.raises(DomainError) as caught:
        services.bias_evaluation_request(
            actor=audited["ml_engineer"], model_version=audited["base"], dataset_version=audited["evaluation_version"],
            prompt_template=audited["template"], label_field="label", sensitive_feature="group", label_mapping=mapping,
            profile_name="default",
        )  # fmt: skip
    assert caught.value.code == "invalid_input" and caught.value.status_code == 400
    assert "label_mapping" in caught.value.fields and "'1'" in caught.value.message

    response = Client(HTTP_AUTHORIZATION=f"Token {token}").post(
        f"/api/v1/model-versions/{audited['base'].pk}/bias-evaluations/",
        json.dumps({"profile": "default", "dataset_version": audited["evaluation_version"].pk,
                    "prompt_template": audited["template"].pk, "label_field": "label", "sensitive_feature": "group",
                    "label_mapping": mapping}),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and list(error["fields"]) == ["label_mapping"]
    assert BiasEvaluation.objects.count() == 0 and Entry.objects.count() == entries
