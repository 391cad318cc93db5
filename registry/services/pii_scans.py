"""PII scans of dataset versions (Presidio, in the worker), their reaper, and the data steward's
review of what they found."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common import artifacts
from common.claims import ClaimedJobs, worker_identity
from common.errors import Conflict, DomainError
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import DatasetVersion, DataSubjectIndexEntry, PiiScan, PiiVerdict, Review, ScanStatus
from registry.records import RecordError
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


def _summarise(findings: list[tuple[int, str, Any]], samples: int) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    for record, field, hit in findings:
        entry = summary.setdefault(hit.entity, {"count": 0, "records": set(), "samples": []})
        entry["count"] += 1
        entry["records"].add(record)
        if len(entry["samples"]) < samples:
            entry["samples"].append(
                {"record": record, "field": field, "start": hit.start, "end": hit.end, "score": hit.score}
            )
    return {
        entity: {"count": e["count"], "records": len(e["records"]), "samples": e["samples"]}
        for entity, e in sorted(summary.items())
    }


_PII_SCAN_JOBS = ClaimedJobs(
    PiiScan, "status", ScanStatus.QUEUED, ScanStatus.RUNNING, "requested_at", "PII_SCAN_LEASE_S"
)


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
    """Run one scan (called by the Celery task). Claims the scan by a conditional update, so a
    second delivery does nothing while its worker lives, and takes it over when that worker died;
    only the current claimant records the result. A blob that vanished fails the scan visibly, and
    so does any unexpected error (its type and message on record, the traceback in the log): a
    scan left ``running`` would be taken over and fail again, for ever.

    When the findings (entity types and their counts) differ from those of the version's previous
    completed scan, the steward's review no longer covers them: it is reset to ``unreviewed`` in
    the same transaction, and the scan's ledger entry says so. The digest already holds the review
    (``dataset_version_digest``: "the state of its PII review"), so the reset changes it and
    earlier approvals stop counting. The findings themselves are deliberately not added to the
    digest: that would change every existing version's digest and void every approval given so
    far. Caveat: a steward who reviews the new findings with the same decision as before gives
    the version its earlier digest back, and approvals given to it count again; the steward's
    review is the judgement of the new findings, as it was of the old."""
    from registry import pii
    from registry.records import read_records

    me = worker_identity()
    if not _pii_scan_claim(scan_id, me):
        logger.info("pii scan %s is not queued (claimed by a live worker, done, or gone); nothing to do", scan_id)
        return None
    scan = PiiScan.objects.select_related("version__dataset").get(pk=scan_id)
    version = scan.version
    try:
        data = artifacts.read_blob(version.sha256)
        texts = [
            (r.number, name, value) for r in read_records(data, version.format) for name, value in r.fields.items()
        ]
        scanner = pii.configured_scanner()
        found = scanner.analyze_many((text for _, _, text in texts), processes=settings.PII_SCAN_PROCESSES)
        findings = [(record, field, hit) for record, field, text in texts for hit in found.get(text, [])]
        subject_keys: set[tuple[str, str]] = set()
        for text, hits in found.items():  # distinct texts: each identifier is hashed once
            for hit in hits:
                kind = pii.SUBJECT_KINDS.get(hit.entity)
                if kind:
                    subject_keys.add(
                        (kind, pii.subject_key(kind, text[hit.start : hit.end], settings.DATA_SUBJECT_INDEX_KEY))
                    )
        summary = _summarise(findings, settings.PII_SAMPLE_LOCATIONS)
        engine = scanner.describe()
    except (artifacts.ArtifactMissing, RecordError, OSError, ValueError) as exc:
        return _scan_fail(scan, actor, f"{type(exc).__name__}: {exc}", claimed_by=me)
    except Exception as exc:
        # A bug, not the data: the traceback goes to the log only (it may quote record content).
        logger.exception("pii scan %s: unexpected error", scan.pk)
        return _scan_fail(scan, actor, f"unexpected error: {type(exc).__name__}: {exc}", claimed_by=me)
    verdict = PiiVerdict.FOUND if findings else PiiVerdict.NONE
    counts = {entity: e["count"] for entity, e in summary.items()}
    with transaction.atomic():
        if not PiiScan.objects.filter(pk=scan.pk, status=ScanStatus.RUNNING, claimed_by=me).update(
            status=ScanStatus.SUCCEEDED, finished_at=timezone.now(), findings=summary,
            records_scanned=version.record_count, engine=engine,
        ):  # fmt: skip
            logger.warning("pii scan %s: this worker lost its claim; the claimant records the result", scan.pk)
            return None
        DataSubjectIndexEntry.objects.bulk_create(
            [DataSubjectIndexEntry(key_hash=key, kind=kind, version=version) for kind, key in sorted(subject_keys)],
            ignore_conflicts=True,
        )
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
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
                "indexed_identifiers": len(subject_keys),
                "review_reset": review_reset,
            },
        )
    scan.refresh_from_db()
    return scan


def _scan_fail(scan: PiiScan, actor: Any, reason: str, *, claimed_by: str) -> PiiScan | None:
    logger.error("pii scan %s failed: %s", scan.pk, reason)
    with transaction.atomic():
        if not PiiScan.objects.filter(pk=scan.pk, status=ScanStatus.RUNNING, claimed_by=claimed_by).update(
            status=ScanStatus.FAILED, finished_at=timezone.now(), error=reason
        ):
            return None
        version = scan.version
        version.pii_verdict = PiiVerdict.FAILED
        version.save(update_fields=["pii_verdict"])
        ledger_append(
            actor=actor,
            action="pii_scan.failed",
            subject=_version_subject(version),
            payload={"scan": scan.pk, "reason": reason[:500]},
        )
    scan.refresh_from_db()
    return scan


def pii_scans_reap(*, stale_queued_s: float | None = None) -> int:
    """Put back the scans whose worker was lost: running under an abandoned claim (see
    ``common.claims``), or queued for longer than ``stale_queued_s`` (default
    ``PII_SCAN_LEASE_S``: their message was lost with a worker that died holding it). Each is sent
    again through the outbox; a scan is idempotent, so one that was only slow is not recorded
    twice. Returns how many."""
    return _PII_SCAN_JOBS.reap(
        task="registry.pii_scan", queue=settings.PII_SCAN_QUEUE, stale_queued_s=stale_queued_s, started_at=None
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
