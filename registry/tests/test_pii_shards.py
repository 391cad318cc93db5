"""A large version is scanned in shards: the shards of a small version (``PII_SCAN_SHARD_RECORDS``
tiny) give the same findings, verdict and ledger entry as one pass; a redelivered shard changes
nothing; a shard whose worker died is taken over (by its redelivered message or by the reaper) and
the scan finishes once; progress shows in the API while shards are outstanding; a failing shard
fails the scan once; a real Celery worker scans shards beside this process. The reader streams:
its memory does not hold the file. Scans are real (Presidio's pattern recognizers)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from common import artifacts
from common.claims import worker_identity
from common.outbox.models import OutboxJob
from common.testing import admin_login
from conftest import start_celery_worker, stop_celery_worker
from governance.services import api_token_create
from registry.models import DatasetVersion, DataSubjectIndexEntry, PiiScan, PiiScanShard, ScanStatus
from registry.records import iter_records
from registry.services import dataset_version_upload, pii_scan_run, pii_scan_shard_run, pii_scans_reap
from registry.services import pii_scans as pii_scans_module
from registry.tests.conftest import make_dataset

PATTERN_ONLY = {
    "PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1,
    "PII_SAMPLE_LOCATIONS": 3,
}  # fmt: skip
# 11 records; e-mail addresses in every shard of 3, two in one record, one in a second field.
RECORDS = [
    {"text": "write to ana@example.org"},
    {"text": "nothing here"},
    {"text": "ana@example.org and bo@example.org", "note": "call me"},
    {"text": "still nothing"},
    {"text": "cy@example.net asked"},
    {"text": "plain"},
    {"text": "plain again", "note": "dee@example.com"},
    {"text": "ed@example.com"},
    {"text": "no"},
    {"text": "fay@example.com"},
    {"text": "last one, gus@example.com"},
]
DATA = b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


def _version(people: dict[str, Any], slug: str, data: bytes = DATA) -> DatasetVersion:
    version, _ = dataset_version_upload(
        actor=people["ml_engineer"], dataset=make_dataset(people, slug=slug), filename="t.jsonl", data=data
    )
    return version


def _succeeded(version: DatasetVersion) -> list[dict[str, Any]]:
    bodies = Entry.objects.filter(subject_id=str(version.pk)).order_by("index").values_list("body", flat=True)
    entries = [json.loads(bytes(b)) for b in bodies]
    return [e["payload"] for e in entries if e["action"] == "pii_scan.succeeded"]


def _actions(version: DatasetVersion) -> list[str]:
    return list(Entry.objects.filter(subject_id=str(version.pk)).values_list("action", flat=True))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.django_db
@override_settings(**PATTERN_ONLY)
def test_shards_give_the_findings_verdict_and_ledger_entry_of_one_pass(people: dict[str, Any]) -> None:
    whole, sharded = _version(people, "whole"), _version(people, "sharded")
    one = pii_scan_run(scan_id=PiiScan.objects.get(version=whole).pk, actor=people["system"])
    sent = OutboxJob.objects.filter(task="registry.pii_scan_shard").count()
    with override_settings(PII_SCAN_SHARD_RECORDS=3):
        many = pii_scan_run(scan_id=PiiScan.objects.get(version=sharded).pk, actor=people["system"])
    assert one is not None and many is not None
    assert (one.status, one.shard_count, many.status, many.shard_count) == ("succeeded", 1, "succeeded", 4)
    shards = list(PiiScanShard.objects.filter(scan=many).values_list("first_record", "end_record", "status"))
    assert shards == [(0, 3, "succeeded"), (3, 6, "succeeded"), (6, 9, "succeeded"), (9, 11, "succeeded")]
    # Every shard went to the queue too (for other workers); this one scanned them all.
    jobs = OutboxJob.objects.filter(task="registry.pii_scan_shard").order_by("pk")[sent:]
    assert sorted(job.args[0] for job in jobs) == sorted(
        PiiScanShard.objects.filter(scan=many).values_list("pk", flat=True)
    )

    assert many.findings == one.findings
    assert one.findings["EMAIL_ADDRESS"]["count"] == 8 and one.findings["EMAIL_ADDRESS"]["records"] == 7
    assert [s["record"] for s in one.findings["EMAIL_ADDRESS"]["samples"]] == [1, 3, 3]  # the first 3, in order
    assert (many.records_scanned, many.records_done, many.records_total) == (11, 11, 11)
    assert many.engine == one.engine and many.rate is not None and many.eta_s is None
    assert (whole.pii_verdict, sharded.pii_verdict) == ("pending", "pending")
    assert {DatasetVersion.objects.get(pk=v.pk).pii_verdict for v in (whole, sharded)} == {"found"}
    (a,), (b,) = _succeeded(whole), _succeeded(sharded)
    assert {**a, "scan": None} == {**b, "scan": None} and a["indexed_identifiers"] == 7
    indexed = {
        v.pk: set(DataSubjectIndexEntry.objects.filter(version=v).values_list("kind", "key_hash"))
        for v in (whole, sharded)
    }
    assert indexed[whole.pk] == indexed[sharded.pk]

    # Parquet (read by row groups, the file checked first) and CSV shards find the same.
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    columns = {name: [r.get(name) for r in RECORDS] for name in ("text", "note")}
    pq.write_table(pa.table(columns), buffer, row_group_size=2)
    csv_data = "text,note\n" + "".join(f'"{r["text"]}",{r.get("note", "")}\n' for r in RECORDS)
    for name, data in (("t.parquet", buffer.getvalue()), ("t.csv", csv_data.encode())):
        other, _ = dataset_version_upload(
            actor=people["ml_engineer"], dataset=make_dataset(people, slug=name[2:]), filename=name, data=data
        )
        with override_settings(PII_SCAN_SHARD_RECORDS=3):
            scanned = pii_scan_run(scan_id=PiiScan.objects.get(version=other).pk, actor=people["system"])
        assert scanned is not None and scanned.shard_count == 4 and scanned.findings == one.findings, name

    # Redelivered shards, and the scan's own message again, change nothing.
    for shard in PiiScanShard.objects.filter(scan=many):
        assert pii_scan_shard_run(shard_id=shard.pk, actor=people["system"]) is None
    assert pii_scan_run(scan_id=many.pk, actor=people["system"]) is None
    assert len(_succeeded(sharded)) == 1 and PiiScan.objects.get(pk=many.pk).findings == one.findings
    assert DataSubjectIndexEntry.objects.filter(version=sharded).count() == 7


@pytest.mark.django_db
@override_settings(**PATTERN_ONLY, PII_SCAN_SHARD_RECORDS=3)
def test_a_shard_whose_worker_died_is_taken_over_and_the_scan_finishes_once(
    people: dict[str, Any], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _version(people, "taken")
    scan = PiiScan.objects.get(version=version)
    real, dead = pii_scans_module.pii_scan_shard_run, f"{socket.gethostname()}:{_dead_pid()}"

    def another_worker_takes_shard_1_and_dies(*, shard_id: int, actor: Any) -> Any:
        if PiiScanShard.objects.get(pk=shard_id).index == 1:
            PiiScanShard.objects.filter(pk=shard_id).update(
                status=ScanStatus.RUNNING, claimed_by=dead, heartbeat_at=timezone.now(), records_done=2
            )
            return None
        return real(shard_id=shard_id, actor=actor)

    monkeypatch.setattr(pii_scans_module, "pii_scan_shard_run", another_worker_takes_shard_1_and_dies)
    ran = pii_scan_run(scan_id=scan.pk, actor=people["system"])
    monkeypatch.undo()
    assert ran is not None and ran.status == ScanStatus.RUNNING and _succeeded(version) == []

    # Progress while it runs, in the API: records done of total, rate and time left.
    _, token = api_token_create(actor=people["auditor"], user=people["auditor"], name="t")
    latest = client.get(f"/api/v1/dataset-versions/{version.pk}", HTTP_AUTHORIZATION=f"Token {token}").json()[
        "latest_scan"
    ]
    assert (latest["status"], latest["shard_count"], latest["records_total"]) == ("running", 4, 11)
    assert latest["records_done"] == 3 + 2 + 3 + 2  # three shards done, two records of the dead one's
    assert latest["rate"] > 0 and latest["eta_s"] >= 0
    admin_login(client, people["data_steward"])  # and on the version's page in the admin
    page = client.get(f"/admin/registry/datasetversion/{version.pk}/change/").content.decode()
    shown = page.split('<span id="scan-progress">')[1].split("</span>")[0]
    assert '<progress max="11" value="10"' in shown and "10 of 11 records (90%)" in shown and "; 4 shards" in shown

    # The reaper puts the shard back; its message is delivered twice: scanned once, recorded once.
    assert pii_scans_reap() == 1
    shard = PiiScanShard.objects.get(scan=scan, index=1)
    assert (shard.status, shard.claimed_by, shard.records_done) == (ScanStatus.QUEUED, "", 0)
    assert OutboxJob.objects.filter(task="registry.pii_scan_shard", args=[shard.pk]).count() == 2  # planned, reaped
    assert pii_scan_shard_run(shard_id=shard.pk, actor=people["system"]).status == ScanStatus.SUCCEEDED
    assert pii_scan_shard_run(shard_id=shard.pk, actor=people["system"]) is None
    done = PiiScan.objects.get(pk=scan.pk)
    assert done.status == ScanStatus.SUCCEEDED and done.findings["EMAIL_ADDRESS"]["count"] == 8
    assert len(_succeeded(version)) == 1 and done.records_done == 11


@pytest.mark.django_db
@override_settings(**PATTERN_ONLY, PII_SCAN_SHARD_RECORDS=3)
def test_a_redelivered_shard_takes_over_from_a_dead_worker_not_from_a_live_one(people: dict[str, Any]) -> None:
    version = _version(people, "redelivered")
    scan = PiiScan.objects.get(version=version)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The scan is planned (by a worker that then died); two of its shards are held.
        PiiScan.objects.filter(pk=scan.pk).update(
            status=ScanStatus.RUNNING, claimed_by=f"{socket.gethostname()}:{_dead_pid()}", claimed_at=timezone.now()
        )
        pii_scans_module._shards_plan(PiiScan.objects.get(pk=scan.pk))
        held = {0: _dead_pid(), 2: live.pid}
        for index, pid in held.items():
            PiiScanShard.objects.filter(scan=scan, index=index).update(
                status=ScanStatus.RUNNING, claimed_by=f"{socket.gethostname()}:{pid}", heartbeat_at=timezone.now()
            )
        shards = {s.index: s.pk for s in PiiScanShard.objects.filter(scan=scan)}
        assert pii_scan_shard_run(shard_id=shards[2], actor=people["system"]) is None  # its worker lives
        assert pii_scan_shard_run(shard_id=shards[0], actor=people["system"]).status == ScanStatus.SUCCEEDED
        # The scan's own message, redelivered: takes the scan over, scans what is queued, not shard 2.
        assert pii_scan_run(scan_id=scan.pk, actor=people["system"]).status == ScanStatus.RUNNING
        assert PiiScanShard.objects.get(pk=shards[2]).status == ScanStatus.RUNNING and _succeeded(version) == []
    finally:
        live.kill()
        live.wait()
    assert pii_scan_shard_run(shard_id=shards[2], actor=people["system"]).status == ScanStatus.SUCCEEDED
    assert PiiScan.objects.get(pk=scan.pk).status == ScanStatus.SUCCEEDED and len(_succeeded(version)) == 1


@pytest.mark.django_db
@override_settings(**PATTERN_ONLY, PII_SCAN_SHARD_RECORDS=3)
def test_a_failing_shard_fails_the_scan_once(people: dict[str, Any]) -> None:
    version = _version(people, "corrupt")
    blob = artifacts.blob_path(version.sha256)
    blob.chmod(0o644)
    blob.write_bytes(DATA.replace(b"ana@", b"ann@"))  # changed on disk: every shard would see it
    scan = pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    assert scan is not None and scan.status == ScanStatus.FAILED
    assert scan.error.startswith("shard 0: ArtifactCorrupt: blob") and scan.findings == {}
    assert set(PiiScanShard.objects.filter(scan=scan).values_list("status", flat=True)) == {ScanStatus.FAILED}
    assert _actions(version).count("pii_scan.failed") == 1 and _succeeded(version) == []
    assert DatasetVersion.objects.get(pk=version.pk).pii_verdict == "failed"


def test_the_reader_streams_a_file_it_does_not_hold(tmp_path: Path) -> None:
    line = json.dumps({"id": "0", "text": "x" * 400, "meta": {"lang": "en"}}).encode() + b"\n"
    path = tmp_path / "big.jsonl"
    count = 40_000
    path.write_bytes(line * count)  # 17 MB
    tracemalloc.start()
    try:
        with path.open("rb") as handle:
            seen = sum(1 for _ in iter_records(handle, "jsonl"))
        with path.open("rb") as handle:  # a shard near the end: the lines before are counted, not parsed
            tail = list(iter_records(handle, "jsonl", start=count - 5, stop=count - 2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count and [r.number for r in tail] == [count - 4, count - 3, count - 2]
    assert tail[0].fields == {"id": "0", "text": "x" * 400, "meta.lang": "en"}
    assert peak < 4 * 2**20 < path.stat().st_size / 4, peak  # a read buffer and a line, not the file


def test_the_stream_reads_csv_and_parquet_by_range() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = b'id,text\r\n1,a\r\n2,"b\r\nc"\r\n\r\n3,d\r\n4,e\r\n'
    got = [(r.number, r.fields) for r in iter_records(io.BytesIO(data), "csv", start=1, stop=3)]
    assert got == [(2, {"id": "2", "text": "b\r\nc"}), (4, {"id": "3", "text": "d"})]
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(25)]}), buffer, row_group_size=7)
    rows = [
        (r.number, r.fields["text"]) for r in iter_records(io.BytesIO(buffer.getvalue()), "parquet", start=13, stop=16)
    ]
    assert rows == [(14, "row 13"), (15, "row 14"), (16, "row 15")]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_scans_shards_beside_this_process(people: dict[str, Any]) -> None:
    """A Celery worker (its own process, on the real broker) and this process both scan shards of
    one scan; whoever ends last records it, once."""
    records = RECORDS * 4  # 44 records, 11 shards of 4
    # On a queue of its own: the suite's shared worker scans with other settings.
    worker = start_celery_worker(
        "pii-shards-test", PII_SCAN_QUEUE="pii-shards-test", PII_NLP_MODEL="blank", PII_ENTITIES="EMAIL_ADDRESS",
        PII_SCAN_PROCESSES="1", PII_SAMPLE_LOCATIONS="3", PII_SCAN_SHARD_RECORDS="4",
    )  # fmt: skip
    try:
        with override_settings(**PATTERN_ONLY, PII_SCAN_SHARD_RECORDS=4, PII_SCAN_QUEUE="pii-shards-test"):
            version = _version(people, "worker", b"".join(json.dumps(r).encode() + b"\n" for r in records))
            scan = PiiScan.objects.get(version=version)
            deadline = time.monotonic() + 120
            shards = PiiScanShard.objects.filter(scan=scan)
            while not shards.exclude(claimed_by="").exists():  # the worker has planned the scan and begun
                assert time.monotonic() < deadline, "the worker did not begin the scan in 120 s"
                time.sleep(0.05)
            while PiiScan.objects.get(pk=scan.pk).status in (ScanStatus.QUEUED, ScanStatus.RUNNING):
                assert time.monotonic() < deadline, "the scan did not finish in 120 s"
                queued = shards.filter(status=ScanStatus.QUEUED).order_by("-index").first()
                if queued is not None:  # this process works as a second worker, from the other end
                    pii_scan_shard_run(shard_id=queued.pk, actor=people["system"])
                else:
                    time.sleep(0.05)
    finally:
        stop_celery_worker(worker)
    scan = PiiScan.objects.get(pk=scan.pk)
    assert scan.status == ScanStatus.SUCCEEDED, scan.error
    assert scan.shard_count == 11 and scan.records_scanned == 44
    assert scan.findings["EMAIL_ADDRESS"]["count"] == 32 and scan.findings["EMAIL_ADDRESS"]["records"] == 28
    claimants = dict(PiiScanShard.objects.filter(scan=scan).values_list("index", "claimed_by"))
    me = worker_identity()
    # The worker planned the scan and took shard 0; this process took the last one.
    assert claimants[0] not in ("", me) and claimants[10] == me, claimants
    assert len(_succeeded(version)) == 1
