"""A data steward's work on single findings of a PII scan: seeing the record behind one, and
marking it a false positive or personal data.

A scan keeps locations only (record, field, span), never the values. To judge a finding the
steward must see the text, so ``pii_finding_view`` reads it from the version's stored bytes at
the moment it is shown and hands it to the caller alone: it is not written to any row, entry,
message or log. What the ledger keeps is that the steward looked, and at which finding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from common.errors import Conflict, DomainError
from governance.models import PiiListKind, PiiListMatch
from governance.permissions import require_project_role
from governance.roles import Role
from governance.services.pii_lists import compile_pattern, pii_list_entry_add
from registry.models import DatasetVersion, FindingState, PiiFindingMark, PiiScan, ScanStatus
from registry.records import RecordError, read_records
from registry.rules import Finding, scan_findings
from registry.selectors import dataset_version_bytes, latest_completed_scan
from registry.services.datasets import _version_subject

STEWARDS = {Role.DATA_STEWARD}


@dataclass(frozen=True)
class FindingPreview:
    """The record behind a finding, as read from the stored bytes just now: every field of the
    record in its order, and the flagged field's text cut around the span."""

    finding: Finding
    fields: list[tuple[str, str]]
    before: str
    flagged: str
    after: str
    ledger_index: int  # the entry that records this viewing


def _finding(scan: PiiScan, number: int) -> Finding:
    if scan.status != ScanStatus.SUCCEEDED:
        raise Conflict("scan_not_succeeded", f"scan {scan.pk} is {scan.status}: it has no findings to show")
    listed = scan_findings(scan.findings or {})
    if not 1 <= number <= len(listed):
        raise DomainError(
            "invalid_input",
            f"scan {scan.pk} kept {len(listed)} finding(s); there is no finding {number}",
            fields={"finding": [f"1 to {len(listed)}"]},
        )
    return listed[number - 1]


def _location(scan: PiiScan, finding: Finding) -> dict[str, Any]:
    # The field's name stays out of the ledger: a name is chosen by whoever made the file and may
    # itself be personal (a CSV header holding an address); the number names the finding.
    return {
        "scan": scan.pk, "finding": finding.number, "entity": finding.entity,
        "record": finding.record, "start": finding.start, "end": finding.end,
    }  # fmt: skip


def _flagged_record(version: DatasetVersion, scan: PiiScan, finding: Finding) -> tuple[Any, str]:
    """The record behind ``finding`` and its flagged field's text, read from the version's stored
    bytes now (checked against their SHA-256); refused when the version was erased or its bytes
    are gone, changed, or no longer hold the finding."""
    if version.erased_at is not None:
        raise Conflict("version_erased", f"{version} was erased ({version.erased_reason}); its records are gone")
    data = dataset_version_bytes(version)
    try:
        record = next((r for r in read_records(data, version.format) if r.number == finding.record), None)
    except RecordError as exc:
        raise Conflict("record_unreadable", f"{version}: {exc}") from None
    text = record.fields.get(finding.field) if record is not None else None
    if text is None or not 0 <= finding.start < finding.end <= len(text):
        raise Conflict(
            "finding_not_in_record",
            f"finding {finding.number} of scan {scan.pk} (record {finding.record}) does not match the stored bytes",
        )
    return record, text


def pii_finding_view(*, actor: Any, scan: PiiScan, number: int) -> FindingPreview:
    """The record behind finding ``number`` of ``scan``, for a data steward of the project.

    Read from the version's stored bytes (checked against their SHA-256) when asked, never from
    a copy; the caller shows it and keeps it nowhere. The viewing is appended to the ledger
    (``pii_finding.viewed``: who, which scan and finding, its type and location, never the text)
    before the text is returned, so no record is shown unrecorded. Refused with nothing recorded
    when the actor is not a steward of the project, the version was erased for a data subject,
    its bytes are gone or changed, or the finding no longer matches them."""
    # Read afresh: the caller's copy may predate an erasure committed since it was loaded.
    version = DatasetVersion.objects.select_related("dataset__project").get(pk=scan.version_id)
    require_project_role(actor, version.dataset.project, STEWARDS, "viewing a flagged record")
    finding = _finding(scan, number)
    record, text = _flagged_record(version, scan, finding)
    with transaction.atomic():
        viewed = ledger_append(
            actor=actor, action="pii_finding.viewed", subject=_version_subject(version),
            payload=_location(scan, finding),
        )  # fmt: skip
    return FindingPreview(
        ledger_index=viewed.index,
        finding=finding,
        fields=list(record.fields.items()),
        before=text[: finding.start],
        flagged=text[finding.start : finding.end],
        after=text[finding.end :],
    )


ALLOW_OPTIONS = ("", "value", "pattern")


def pii_finding_mark(
    *, actor: Any, scan: PiiScan, number: int, state: str, allow: str = "", allow_pattern: str = ""
) -> tuple[PiiFindingMark, bool]:
    """A data steward marks finding ``number`` of ``scan`` as ``false_positive`` (not personal
    data) or ``personal_data``; returns (mark, changed). Marking again with another state changes
    the mark; with the same state it changes and records nothing.

    Only the findings of the version's latest completed scan are marked: an older scan's findings
    are no longer what the version's verdict is about. The marks are the steward's reasons for the
    version's review (``dataset_version_review``), which refuses ``false_positive`` while a
    finding is marked personal data. Ledger: ``pii_finding.marked`` with the finding's location
    and the state before and after.

    A false positive can also go on the project's allow-list, so the same noise is not reviewed
    twice: ``allow="value"`` adds the finding's value (read from the stored record now, kept and
    ledgered as its keyed hash only), ``allow="pattern"`` adds ``allow_pattern``, which must match
    the finding's whole value; either for the finding's entity type, through
    ``governance.services.pii_list_entry_add`` in the same transaction (its own
    ``pii_list.entry_added`` entry, citing the scan and finding). ``changed`` is then also true when
    only the list changed. Refused, with nothing changed, when the record can no longer be read
    (erased, bytes gone) or the pattern does not match the value."""
    # Read afresh: an erasure committed since the caller loaded the scan must refuse an allow.
    version = DatasetVersion.objects.select_related("dataset__project").get(pk=scan.version_id)
    project = version.dataset.project
    require_project_role(actor, project, STEWARDS, "marking a PII finding")
    if state not in FindingState.values:
        raise DomainError(
            "invalid_input",
            f"state must be one of {', '.join(FindingState.values)}",
            fields={"state": [f"got {state!r}"]},
        )
    if allow not in ALLOW_OPTIONS:
        raise DomainError(
            "invalid_input", "allow must be value, pattern or blank", fields={"allow": [f"got {allow!r}"]}
        )
    if allow and state != FindingState.FALSE_POSITIVE:
        raise DomainError(
            "invalid_input",
            "only a finding marked false_positive goes on the allow-list",
            fields={"allow": [f"not with state {state!r}"]},
        )
    if allow_pattern and allow != "pattern":
        raise DomainError(
            "invalid_input", "allow_pattern is given with allow=pattern", fields={"allow_pattern": ["not asked for"]}
        )
    finding = _finding(scan, number)
    value = None
    if allow:
        _, text = _flagged_record(version, scan, finding)
        value = text[finding.start : finding.end]
        if allow == "pattern":
            compiled = compile_pattern(allow_pattern, field="allow_pattern")
            if compiled.fullmatch(value) is None:
                raise DomainError(
                    "invalid_input",
                    f"the pattern does not match the whole value of finding {number}: it would not allow it",
                    fields={"allow_pattern": ["does not match the finding's value"]},
                )
    with transaction.atomic():
        latest = latest_completed_scan(version)
        if latest is None or latest.pk != scan.pk:
            raise Conflict(
                "scan_superseded",
                f"scan {scan.pk} is not the latest completed scan of {version}; mark the findings of scan "
                f"{latest.pk if latest else '-'}",
            )
        mark = PiiFindingMark.objects.select_for_update().filter(scan=scan, finding=number).first()
        previous = mark.state if mark is not None else None
        changed = previous != state
        now = timezone.now()
        if mark is None:
            try:
                with transaction.atomic():
                    mark = PiiFindingMark.objects.create(
                        scan=scan, finding=number, state=state, marked_by=actor, marked_at=now
                    )
            except IntegrityError:
                taken = f"finding {number} was marked by someone else just now; retry"
                raise Conflict("concurrent_mark", taken) from None
        elif changed:
            mark.state, mark.marked_by, mark.marked_at = state, actor, now
            mark.save(update_fields=["state", "marked_by", "marked_at"])
        if changed:
            ledger_append(
                actor=actor, action="pii_finding.marked", subject=_version_subject(version),
                payload={**_location(scan, finding), "state": state, "previous_state": previous},
            )  # fmt: skip
        if allow and value is not None:
            _, added = pii_list_entry_add(
                actor=actor, project=project, kind=PiiListKind.ALLOW,
                match=PiiListMatch.VALUE if allow == "value" else PiiListMatch.PATTERN,
                text=value if allow == "value" else allow_pattern, entity=finding.entity,
                reason=f"finding {number} of scan {scan.pk} marked a false positive",
                source={"scan": scan.pk, "finding": number, "dataset_version": version.pk},
            )  # fmt: skip
            changed = changed or added
    return mark, changed


def findings_marked_personal(scan: PiiScan) -> list[int]:
    """The numbers of the scan's findings a steward marked personal data."""
    return list(
        PiiFindingMark.objects.filter(scan=scan, state=FindingState.PERSONAL_DATA)
        .order_by("finding")
        .values_list("finding", flat=True)
    )
