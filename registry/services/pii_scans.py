"""PII scans of dataset versions (Presidio, in the worker), their reaper, and the data steward's
review of what they found.

A scan is split into shards of ``PII_SCAN_SHARD_RECORDS`` records, each a Celery task on
``PII_SCAN_QUEUE``, so a large version is scanned by as many workers as are running. Each shard
reads its records as a stream from the blob and keeps only a bounded summary, so a scan's memory
does not grow with the version's size; the last shard to end merges the summaries and writes the
verdict. Progress (records done of total, rate, time left) is on the scan while it runs."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from audits.ledger.services import ledger_append
from common import artifacts
from common.claims import ClaimedJobs, worker_identity
from common.errors import Conflict, DomainError
from common.tasks import dispatch_on_commit
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import (
    DatasetVersion,
    DataSubjectIndexEntry,
    PiiScan,
    PiiScanShard,
    PiiVerdict,
    Review,
    ScanStatus,
)
from registry.records import Record, RecordError, iter_records
from registry.selectors import latest_completed_scan
from registry.services.datasets import WRITERS, _scan_request, _version_subject
from registry.services.pii_findings import findings_marked_personal

logger = logging.getLogger(__name__)


def pii_scan_request(*, actor: Any, version: DatasetVersion) -> PiiScan:
    """Scan a version again (after a failure, or with new recognizers)."""
    require_project_role(actor, version.dataset.project, WRITERS, "requesting a PII scan")
    with transaction.atomic():
        if version.scans.filter(status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING]).exists():
            raise Conflict("scan_in_progress", f"a scan of {version} is already queued or running")
        return _scan_request(actor=actor, version=version)


_PII_SCAN_JOBS = ClaimedJobs(
    PiiScan, "status", ScanStatus.QUEUED, ScanStatus.RUNNING, "requested_at", "PII_SCAN_LEASE_S"
)
# A shard's claim is renewed by its progress updates (``heartbeat_at``), so a long shard whose
# worker lives is never taken over, and one whose worker died is (same lease as scans).
_SHARD_JOBS = ClaimedJobs(
    PiiScanShard, "status", ScanStatus.QUEUED, ScanStatus.RUNNING, "queued_at", "PII_SCAN_LEASE_S",
    beat="heartbeat_at",
)  # fmt: skip
PROGRESS_EVERY_S = 2.0  # a shard records its progress (one cheap UPDATE) at most this often
_INDEX_BATCH = 5000  # identifiers held before they are written to the data-subject index


def _pii_scan_claim(scan_id: int, me: str) -> bool:
    """Claim a queued scan, or take over a running one whose claim is abandoned (its worker died:
    ``common.claims``). A conditional update each, so two deliveries never both hold it."""
    now = timezone.now()
    if _PII_SCAN_JOBS.claim(scan_id, me, started_at=now):
        return True
    lost = _PII_SCAN_JOBS.take_over(scan_id, me, started_at=now)
    if lost is not None:
        logger.warning("pii scan %s taken over from %s (its worker is gone)", scan_id, lost or "?")
    return lost is not None


def pii_scan_run(*, scan_id: int, actor: Any) -> PiiScan | None:
    """Run one scan (called by the ``registry.pii_scan`` task; returns ``None`` when there was
    nothing to do). Claims the scan by a conditional update, so a second delivery does nothing
    while its worker lives, and takes it over when that worker died.

    The scan is split into shards of ``PII_SCAN_SHARD_RECORDS`` records (``_shards_plan``, once),
    each scanned as a stream by ``pii_scan_shard_run``. A scan of several shards sends a
    ``registry.pii_scan_shard`` task for each, so every running worker on ``PII_SCAN_QUEUE`` takes
    part; this worker scans the shards still queued too, and returns when none is left (the
    scan is then finished, or running on other workers). A scan of one shard runs here, whole.
    The last shard to end writes the verdict (``_scan_finish``)."""
    me = worker_identity()
    if not _pii_scan_claim(scan_id, me):
        logger.info("pii scan %s is not queued (claimed by a live worker, done, or gone); nothing to do", scan_id)
        return None
    scan = PiiScan.objects.select_related("version__dataset").get(pk=scan_id)
    _shards_plan(scan)
    queued = PiiScanShard.objects.filter(scan_id=scan_id, status=ScanStatus.QUEUED).order_by("index")
    while (shard_id := queued.values_list("pk", flat=True).first()) is not None:
        pii_scan_shard_run(shard_id=shard_id, actor=actor)
    _scan_finish(scan_id, actor)  # shards may have ended while the scan was queued again
    scan.refresh_from_db()
    return scan


def _shards_plan(scan: PiiScan) -> None:
    """Split the scan into shards by record position, once (a scan taken over keeps its shards),
    and send a task for each when there are several."""
    size, total = settings.PII_SCAN_SHARD_RECORDS, scan.version.record_count
    count = max(1, -(-total // size))
    try:
        with transaction.atomic():
            if PiiScanShard.objects.filter(scan=scan).exists():
                return
            shards = PiiScanShard.objects.bulk_create(
                [
                    PiiScanShard(
                        scan=scan,
                        index=i,
                        first_record=i * size,
                        end_record=min(total, (i + 1) * size),
                        last=i == count - 1,
                    )
                    for i in range(count)
                ]
            )
            PiiScan.objects.filter(pk=scan.pk).update(shard_count=count, records_total=total, records_done=0)
            if count > 1:
                for shard in shards:
                    dispatch_on_commit("registry.pii_scan_shard", args=(shard.pk,), queue=settings.PII_SCAN_QUEUE)
    except IntegrityError:  # planned meanwhile by a worker that took the scan over
        return


def _shard_claim(shard_id: int, me: str) -> bool:
    if _SHARD_JOBS.claim(shard_id, me, records_done=0):
        return True
    lost = _SHARD_JOBS.take_over(shard_id, me, records_done=0)
    if lost is not None:
        logger.warning("pii scan shard %s taken over from %s (its worker is gone)", shard_id, lost or "?")
    return lost is not None


class _ClaimLost(Exception):
    """Another worker took this shard over: this one stops and records nothing."""


def pii_scan_shard_run(*, shard_id: int, actor: Any) -> PiiScanShard | None:
    """Scan one shard (called by the ``registry.pii_scan_shard`` task, and by ``pii_scan_run``).
    Claimed by a conditional update, so a redelivered shard does nothing twice; a shard whose
    worker died is taken over and scanned again from its first record. Its result is recorded
    only while this worker still holds the claim; then, if it was the last, the scan is finished.
    A shard that fails (unreadable or changed file, malformed record, a bug) fails the scan, once.
    Returns the shard, or ``None`` when there was nothing to do or the claim was lost."""
    me = worker_identity()
    if not _shard_claim(shard_id, me):
        logger.info("pii scan shard %s is not queued (claimed by a live worker, or done); nothing to do", shard_id)
        return None
    shard = PiiScanShard.objects.select_related("scan__version__dataset").get(pk=shard_id)
    scan = shard.scan
    if scan.status not in (ScanStatus.QUEUED, ScanStatus.RUNNING):  # the scan failed meanwhile
        _shard_rows(shard, me).update(status=ScanStatus.FAILED, finished_at=timezone.now())
        return None
    try:
        result = _shard_scan(shard, me)
    except _ClaimLost:
        logger.warning("pii scan shard %s: this worker lost its claim; the claimant records the result", shard.pk)
        return None
    except (artifacts.ArtifactMissing, RecordError, OSError, ValueError) as exc:
        return _shard_fail(shard, actor, f"{type(exc).__name__}: {exc}", me)
    except Exception as exc:
        # A bug, not the data: the traceback goes to the log only (it may quote record content).
        logger.exception("pii scan %s, shard %s: unexpected error", scan.pk, shard.index)
        return _shard_fail(shard, actor, f"unexpected error: {type(exc).__name__}: {exc}", me)
    with transaction.atomic():
        if not _shard_rows(shard, me).update(
            status=ScanStatus.SUCCEEDED, finished_at=timezone.now(), records_done=result["records"],
            heartbeat_at=timezone.now(), result=result,
        ):  # fmt: skip
            logger.warning("pii scan shard %s: this worker lost its claim; the claimant records the result", shard.pk)
            return None
        _scan_progress(scan.pk)
    _scan_finish(scan.pk, actor)
    shard.refresh_from_db()
    return shard


def _shard_rows(shard: PiiScanShard, me: str) -> Any:
    return PiiScanShard.objects.filter(pk=shard.pk, status=ScanStatus.RUNNING, claimed_by=me)


def _scan_progress(scan_id: int) -> None:
    """The scan's records done: the sum over its shards. The scan's claim is renewed with it: a
    scan is alive while any of its shards is."""
    now = timezone.now()
    done = PiiScanShard.objects.filter(scan_id=scan_id).aggregate(n=Sum("records_done"))["n"] or 0
    PiiScan.objects.filter(pk=scan_id, status=ScanStatus.RUNNING).update(
        records_done=done, progress_at=now, claimed_at=now
    )


def _index_write(version: DatasetVersion, keys: set[tuple[str, str]]) -> None:
    DataSubjectIndexEntry.objects.bulk_create(
        [DataSubjectIndexEntry(key_hash=key, kind=kind, version=version) for kind, key in sorted(keys)],
        ignore_conflicts=True,
    )
    keys.clear()


@contextmanager
def _shard_records(version: DatasetVersion, shard: PiiScanShard) -> Iterator[Iterator[Record]]:
    """The shard's records, streamed from the blob. JSONL, CSV and text are read through
    ``artifacts.open_reader`` and then to the end of the file, so the bytes scanned are the bytes
    checked against the digest (``ArtifactCorrupt`` otherwise, also ahead of a malformed record
    the changed bytes hold); Parquet, which needs a seekable file, is checked first
    (``open_blob``)."""
    stop = None if shard.last else shard.end_record
    if version.format == "parquet":
        with artifacts.open_blob(version.sha256).open("rb") as handle:
            yield iter_records(handle, "parquet", start=shard.first_record, stop=stop)
        return
    with artifacts.open_reader(version.sha256) as reader:
        try:
            yield iter_records(reader, version.format, start=shard.first_record, stop=stop)
        except RecordError:
            while reader.read(artifacts.CHUNK):
                pass
            raise
        while reader.read(artifacts.CHUNK):
            pass


def _shard_scan(shard: PiiScanShard, me: str) -> dict[str, Any]:
    """Scan the shard's records as a stream and return its part of the findings.

    Memory holds the scanner's window of texts, one entry per entity type and at most
    ``PII_SAMPLE_LOCATIONS`` samples each, and at most ``_INDEX_BATCH`` identifiers before they
    are written to the data-subject index: none of it grows with the number of records. The
    identifiers are indexed as they are found, before the shard's result is recorded: each is in
    the version whether or not the scan ends well (``ignore_conflicts``: written once)."""
    from registry import pii, pii_lists

    version = shard.scan.version
    scanner = pii.configured_scanner()
    # The project's allow and deny lists, as they stand when the shard starts: an allowed value is
    # neither counted nor indexed as a data subject's identifier.
    lists = pii_lists.for_project(version.dataset.project)
    secret, most = settings.DATA_SUBJECT_INDEX_KEY, settings.PII_SAMPLE_LOCATIONS
    entities: dict[str, dict[str, Any]] = {}
    keys: set[tuple[str, str]] = set()
    pending: deque[tuple[int, int, str, str]] = deque()  # (position, record, field, text) in flight
    read = 0

    def texts(records: Iterator[Record]) -> Iterator[str]:
        nonlocal read
        for record in records:
            read += 1
            for name, value in record.fields.items():
                pending.append((read, record.number, name, value))
                yield value

    beat = time.monotonic()
    with _shard_records(version, shard) as records:
        for hits in scanner.scan_iter(texts(records), processes=settings.PII_SCAN_PROCESSES):
            position, number, field, text = pending.popleft()
            for hit in lists.apply(text, hits):
                entry = entities.setdefault(hit.entity, {"count": 0, "records": 0, "samples": [], "last": 0})
                entry["count"] += 1
                if entry["last"] != number:  # records come in order: a new record for this type
                    entry["records"], entry["last"] = entry["records"] + 1, number
                if len(entry["samples"]) < most:
                    entry["samples"].append(
                        {"record": number, "field": field, "start": hit.start, "end": hit.end, "score": hit.score}
                    )
                kind = pii.SUBJECT_KINDS.get(hit.entity)
                if kind:
                    keys.add((kind, pii.subject_key(kind, text[hit.start : hit.end], secret)))
            if len(keys) >= _INDEX_BATCH:
                _index_write(version, keys)
            if time.monotonic() - beat >= PROGRESS_EVERY_S:
                beat = time.monotonic()
                with transaction.atomic():
                    if not _shard_rows(shard, me).update(records_done=position - 1, heartbeat_at=timezone.now()):
                        raise _ClaimLost
                    _scan_progress(shard.scan_id)
    _index_write(version, keys)
    for entry in entities.values():
        del entry["last"]
    return {"records": read, "entities": entities, "engine": {**scanner.describe(), "pii_lists": lists.describe()}}


def _shard_fail(shard: PiiScanShard, actor: Any, reason: str, me: str) -> PiiScanShard | None:
    with transaction.atomic():
        if not _shard_rows(shard, me).update(status=ScanStatus.FAILED, finished_at=timezone.now()):
            return None
        _scan_fail(shard.scan, actor, f"shard {shard.index}: {reason}" if shard.scan.shard_count > 1 else reason)
    shard.refresh_from_db()
    return shard


def _merge(results: list[dict[str, Any]], most: int) -> dict[str, Any]:
    """The shards' findings as one scan's: counts and record counts add up (shards hold disjoint
    records), samples are the first ``most`` in record order, as one pass would have kept."""
    merged: dict[str, dict[str, Any]] = {}
    for result in results:
        for entity, part in result["entities"].items():
            entry = merged.setdefault(entity, {"count": 0, "records": 0, "samples": []})
            entry["count"] += part["count"]
            entry["records"] += part["records"]
            entry["samples"].extend(part["samples"][: max(0, most - len(entry["samples"]))])
    return dict(sorted(merged.items()))


def _engine_record(shards: list[PiiScanShard]) -> dict[str, Any]:
    """The engine the shards ran; when the project's lists changed while they ran, which lists
    each shard applied (a finding is then traceable to the lists it was made under)."""
    engine = dict(shards[0].result["engine"])
    lists = [s.result["engine"].get("pii_lists") for s in shards]
    if any(entry != lists[0] for entry in lists):
        engine["pii_lists_by_shard"] = lists
    return engine


def _scan_finish(scan_id: int, actor: Any) -> bool:
    """Once every shard has succeeded, merge their results and record the scan: one caller does
    it (a conditional update), whichever ended last.

    When the findings (entity types and their counts) differ from those of the version's previous
    completed scan, the steward's review no longer covers them: it is reset to ``unreviewed`` in
    the same transaction, and the scan's ledger entry says so. The digest already holds the review
    (``dataset_version_digest``: "the state of its PII review"), so the reset changes it and
    earlier approvals stop counting. The findings themselves are deliberately not added to the
    digest: that would change every existing version's digest and void every approval given so
    far. Caveat: a steward who reviews the new findings with the same decision as before gives
    the version its earlier digest back, and approvals given to it count again; the steward's
    review is the judgement of the new findings, as it was of the old."""
    shards = list(PiiScanShard.objects.filter(scan_id=scan_id).order_by("index"))
    if not shards or any(s.status != ScanStatus.SUCCEEDED for s in shards):
        return False
    summary = _merge([s.result for s in shards], settings.PII_SAMPLE_LOCATIONS)
    records = sum(s.result["records"] for s in shards)
    verdict = PiiVerdict.FOUND if summary else PiiVerdict.NONE
    counts = {entity: e["count"] for entity, e in summary.items()}
    now = timezone.now()
    with transaction.atomic():
        if not PiiScan.objects.filter(pk=scan_id, status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING]).update(
            status=ScanStatus.SUCCEEDED, finished_at=now, findings=summary, records_scanned=records,
            records_done=records, progress_at=now, engine=_engine_record(shards),
        ):  # fmt: skip
            return False
        scan = PiiScan.objects.select_related("version__dataset").get(pk=scan_id)
        version = DatasetVersion.objects.select_for_update().get(pk=scan.version_id)
        previous = (
            PiiScan.objects.filter(version=version, status=ScanStatus.SUCCEEDED)
            .exclude(pk=scan.pk)
            .order_by("-finished_at", "-pk")
            .first()
        )
        review_reset = None
        previous_counts = (
            {e: f.get("count") for e, f in (previous.findings or {}).items()} if previous is not None else None
        )
        if previous_counts is not None and previous_counts != counts and version.review != Review.UNREVIEWED:
            review_reset = {
                "previous_review": version.review,
                "previous_scan": previous.pk,
                "previous_counts": previous_counts,
            }
            version.review, version.reviewed_by, version.reviewed_at, version.review_note = (
                Review.UNREVIEWED, None, None, "",
            )  # fmt: skip
        version.pii_verdict = verdict
        version.save(update_fields=["pii_verdict", "review", "reviewed_by", "reviewed_at", "review_note"])
        ledger_append(
            actor=actor,
            action="pii_scan.succeeded",
            subject=_version_subject(version),
            payload={
                "scan": scan.pk,
                "verdict": verdict,
                "counts": counts,
                "records": version.record_count,
                # The version's identifiers in the index: its shards wrote them as they found them.
                "indexed_identifiers": DataSubjectIndexEntry.objects.filter(version=version).count(),
                "review_reset": review_reset,
            },
        )
    return True


def _scan_fail(scan: PiiScan, actor: Any, reason: str) -> None:
    """Fail the scan once (a conditional update), and its shards still to do with it."""
    logger.error("pii scan %s failed: %s", scan.pk, reason)
    now = timezone.now()
    if not PiiScan.objects.filter(pk=scan.pk, status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING]).update(
        status=ScanStatus.FAILED, finished_at=now, error=reason
    ):
        return
    PiiScanShard.objects.filter(scan=scan, status__in=[ScanStatus.QUEUED, ScanStatus.RUNNING]).update(
        status=ScanStatus.FAILED, finished_at=now
    )
    version = scan.version
    version.pii_verdict = PiiVerdict.FAILED
    version.save(update_fields=["pii_verdict"])
    ledger_append(
        actor=actor,
        action="pii_scan.failed",
        subject=_version_subject(version),
        payload={"scan": scan.pk, "reason": reason[:500]},
    )


def pii_scans_reap(*, stale_queued_s: float | None = None) -> int:
    """Put back the scans and shards whose worker was lost: running under an abandoned claim
    (see ``common.claims``), or queued for longer than ``stale_queued_s`` (default
    ``PII_SCAN_LEASE_S``: their message was lost with a worker that died holding it). Each is sent
    again through the outbox; scans and shards are idempotent, so one that was only slow is not
    recorded twice (a shard put back is scanned again from its first record). Returns how many."""
    scans = _PII_SCAN_JOBS.reap(
        task="registry.pii_scan", queue=settings.PII_SCAN_QUEUE, stale_queued_s=stale_queued_s, started_at=None
    )
    return scans + _SHARD_JOBS.reap(
        task="registry.pii_scan_shard", queue=settings.PII_SCAN_QUEUE, stale_queued_s=stale_queued_s, records_done=0
    )


def dataset_version_review(*, actor: Any, version: DatasetVersion, decision: str, note: str = "") -> DatasetVersion:
    """A data steward's judgement of a scan's findings: ``confirmed`` (personal data present, use
    allowed under the lawful basis), ``false_positive`` or ``anonymisation_required``.
    ``false_positive`` is refused while a finding of the latest scan is marked personal data
    (``pii_finding_mark``): the review would contradict the steward's own marks."""
    require_project_role(actor, version.dataset.project, {Role.DATA_STEWARD}, "reviewing personal data")
    allowed = {Review.CONFIRMED, Review.FALSE_POSITIVE, Review.ANONYMISATION_REQUIRED}
    if decision not in allowed:
        raise DomainError(
            "invalid_input",
            f"decision must be one of {', '.join(sorted(allowed))}",
            fields={"decision": [f"got {decision!r}"]},
        )
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        if version.pii_verdict != PiiVerdict.FOUND:
            raise Conflict(
                "nothing_to_review", f"{version} has PII verdict {version.pii_verdict!r}: only found PII is reviewed"
            )
        scan = latest_completed_scan(version)
        marked = findings_marked_personal(scan) if decision == Review.FALSE_POSITIVE and scan is not None else []
        if marked:
            raise Conflict(
                "findings_marked_personal_data",
                f"finding(s) {', '.join(map(str, marked))} of scan {scan.pk} are marked personal data: mark them "
                "otherwise, or review the version as confirmed or anonymisation_required",
            )
        version.review, version.reviewed_by, version.reviewed_at, version.review_note = (
            decision, actor, timezone.now(), note,
        )  # fmt: skip
        version.save(update_fields=["review", "reviewed_by", "reviewed_at", "review_note"])
        ledger_append(
            actor=actor, action="dataset_version.reviewed", subject=_version_subject(version),
            payload={"decision": decision, "note": note},
        )  # fmt: skip
    return version
