"""A scan whose worker died is taken over, not left running: a redelivered message takes over a
claim whose process is gone (or whose lease ran out), the reaper queues such scans again, and a
worker that lost its claim records nothing. The scans themselves are real (Presidio's pattern
recognizers on a file the test writes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from common.claims import worker_identity
from common.outbox.models import OutboxJob
from registry import pii
from registry.models import DatasetVersion, PiiScan, PiiScanShard, ScanStatus
from registry.services import dataset_version_upload, pii_scan_run, pii_scans_reap
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db
PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
DATA = b'{"text": "write to ana@example.org"}\n{"text": "nothing here"}\n'


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Any:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def _scan(people: dict[str, Any], slug: str) -> PiiScan:
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=make_dataset(people, slug=slug), filename="t.jsonl", data=DATA
    )
    return PiiScan.objects.get(version=version)


def _claimed(scan: PiiScan, pid: int, *, ago_s: float = 0) -> None:
    at = timezone.now() - timedelta(seconds=ago_s)
    PiiScan.objects.filter(pk=scan.pk).update(
        status=ScanStatus.RUNNING, claimed_by=f"{socket.gethostname()}:{pid}", claimed_at=at, started_at=at
    )


def _entries(scan: PiiScan) -> list[str]:
    return list(Entry.objects.filter(subject_id=str(scan.version_id)).values_list("action", flat=True))


@override_settings(**PATTERN_ONLY)
def test_a_redelivered_scan_takes_over_from_a_dead_worker_not_from_a_live_one(
    people: dict[str, Any], live_pid: int
) -> None:
    dead, alive = _scan(people, "dead"), _scan(people, "alive")
    _claimed(dead, _dead_pid())
    _claimed(alive, live_pid)
    done = pii_scan_run(scan_id=dead.pk, actor=people["system"])
    assert done is not None and done.status == ScanStatus.SUCCEEDED
    assert done.findings["EMAIL_ADDRESS"]["count"] == 1 and done.claimed_by == worker_identity()
    assert DatasetVersion.objects.get(pk=dead.version_id).pii_verdict == "found"
    assert _entries(dead).count("pii_scan.succeeded") == 1

    assert pii_scan_run(scan_id=alive.pk, actor=people["system"]) is None  # its worker is still at it
    assert PiiScan.objects.get(pk=alive.pk).status == ScanStatus.RUNNING and "pii_scan.succeeded" not in _entries(alive)
    with override_settings(PII_SCAN_LEASE_S=60):  # ... until its lease runs out
        _claimed(alive, live_pid, ago_s=61)
        assert pii_scan_run(scan_id=alive.pk, actor=people["system"]).status == ScanStatus.SUCCEEDED
    assert pii_scan_run(scan_id=dead.pk, actor=people["system"]) is None  # done: a third delivery does nothing
    assert _entries(dead).count("pii_scan.succeeded") == 1


@override_settings(**PATTERN_ONLY)
def test_a_worker_that_lost_its_claim_records_nothing(people: dict[str, Any], monkeypatch: Any) -> None:
    scan = _scan(people, "lost")
    real = pii.configured_scanner

    def taken_over_meanwhile() -> Any:  # another worker takes the shard over while this one reads
        PiiScanShard.objects.filter(scan=scan).update(claimed_by="elsewhere:1")
        return real()

    monkeypatch.setattr(pii, "configured_scanner", taken_over_meanwhile)
    ran = pii_scan_run(scan_id=scan.pk, actor=people["system"])
    assert ran is not None and ran.status == ScanStatus.RUNNING  # the shard's claimant records it
    shard = PiiScanShard.objects.get(scan=scan)
    assert (shard.status, shard.claimed_by, shard.result) == (ScanStatus.RUNNING, "elsewhere:1", {})
    assert PiiScan.objects.get(pk=scan.pk).findings == {}
    assert "pii_scan.succeeded" not in _entries(scan)
    assert DatasetVersion.objects.get(pk=scan.version_id).pii_verdict != "found"


@override_settings(**PATTERN_ONLY)
def test_the_reaper_queues_lost_scans_again_once_per_period(people: dict[str, Any], live_pid: int) -> None:
    lost, working, waiting, fresh = (_scan(people, slug) for slug in ("lost", "working", "waiting", "fresh"))
    _claimed(lost, _dead_pid())
    _claimed(working, live_pid)
    PiiScan.objects.filter(pk=waiting.pk).update(requested_at=timezone.now() - timedelta(seconds=120))
    sent_before = OutboxJob.objects.filter(task="registry.pii_scan").count()

    assert pii_scans_reap(stale_queued_s=60) == 2  # lost (running, worker gone) and waiting (queued too long)
    assert PiiScan.objects.get(pk=lost.pk).status == ScanStatus.QUEUED
    assert PiiScan.objects.get(pk=working.pk).status == ScanStatus.RUNNING
    jobs = OutboxJob.objects.filter(task="registry.pii_scan").order_by("pk")[sent_before:]
    assert sorted(job.args[0] for job in jobs) == sorted([lost.pk, waiting.pk])
    assert pii_scans_reap(stale_queued_s=60) == 0  # each sent once per period, not on every beat
    assert PiiScan.objects.get(pk=fresh.pk).claimed_at is None

    # The message the reaper sent finishes the scan.
    assert pii_scan_run(scan_id=lost.pk, actor=people["system"]).status == ScanStatus.SUCCEEDED
    assert _entries(lost).count("pii_scan.succeeded") == 1
