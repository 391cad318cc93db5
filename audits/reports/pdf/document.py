"""The document model of a report: what a builder hands to ``build_pdf``, and the metadata
``read_pdf`` gives back. Plain data, checked when rendered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

METADATA_FORMAT = "llmops-governance/report/v1"
METADATA_FILENAME = "report.json"
VERIFY_COMMAND = "python manage.py report verify FILE.pdf"
PRODUCER = "llmops-governance reports"
# Receipts embedded per report (one a cited entry, about 1 KB each at a million entries): a report
# citing 10,000 entries grows by some 100 KB, not by megabytes. Which entries: ``receipt_indexes``.
RECEIPTS_LIMIT = 100
RECEIPT_MIME_TYPE = "application/cose"


def receipt_filename(index: int) -> str:
    return f"ledger-receipt-{index}.cose"


class ReportPdfError(ValueError):
    """A report cannot be rendered from these inputs, or a PDF holds no readable report metadata."""


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Digest:
    """A hash in a table cell (hex or ``sha256:`` hex): printed in full, never cut, never split
    like a word (small monospace, or in the report's appendix of digests where the column is too
    narrow)."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Table:
    """Rows of cells under ``columns``; ``citations[i]``, when given, is the ledger index that row
    ``i`` rests on (``None`` for a row that cites nothing), shown in a "ledger #" column."""

    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    citations: Sequence[int | None] | None = None


@dataclass(frozen=True)
class BarChart:
    title: str
    categories: Sequence[str]
    series: dict[str, list[float]]


@dataclass(frozen=True)
class LineChart:
    title: str
    x_labels: Sequence[str]
    series: dict[str, list[float]]


@dataclass(frozen=True)
class KeyValues:
    pairs: Sequence[tuple[str, object]]


Section = Heading | Paragraph | Table | BarChart | LineChart | KeyValues


@dataclass(frozen=True)
class Claim:
    """A fact the report states, with the ledger entry that says it: ``field`` is a dotted path
    into the entry's JSON document (``action``, ``subject.digest``, ``payload.lawful_basis``,
    ``actor.name``) and ``value`` what the report states is found there. The claims travel in
    ``report.json``; ``report verify`` re-reads each entry and names the first claim it does not
    bear out."""

    fact: str
    entry: int
    field: str
    value: Any


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    mime_type: str
    description: str


@dataclass(frozen=True)
class Report:
    """``checkpoint_text`` is the signed checkpoint note the report was built from; every cited
    ledger index must lie below its tree size. ``report_id`` left empty is derived from the
    content, so the same inputs always carry the same id."""

    title: str
    scope: str
    period_start: date
    period_end: date
    generated_at: datetime
    checkpoint_text: str
    sections: Sequence[Section] = field(default_factory=tuple)
    kind: str = "report"
    report_id: str = ""
    claims: Sequence[Claim] = field(default_factory=tuple)
    # Non-empty: the report lacks required facts (named here); every page is marked
    # "DRAFT - incomplete" and report.json says so.
    draft_notice: str = ""
    # Further files embedded next to report.json, in the signed revision: a letter's
    # machine-readable annex, for one.
    attachments: Sequence[Attachment] = field(default_factory=tuple)
    # A letter to a person: its first page is the letter; the checkpoint and how to verify come last.
    proof_last: bool = False
    # SCITT receipts (RFC 9942 COSE, ``audits.ledger.receipts``) of cited entries in the tree of
    # ``checkpoint_text``, by ledger index: at most RECEIPTS_LIMIT, chosen by ``receipt_indexes``.
    # Embedded as ledger-receipt-<index>.cose in the signed revision; report.json lists them.
    receipts: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportInfo:
    format: str
    kind: str
    report_id: str
    title: str
    scope: str
    period_start: str
    period_end: str
    generated_at: datetime
    checkpoint_text: str
    cited_indexes: tuple[int, ...]
    claims: tuple[Claim, ...] = ()
    draft_notice: str = ""
    receipt_indexes: tuple[int, ...] = ()  # the cited entries whose receipts are embedded


def cited_indexes(report: Report) -> tuple[int, ...]:
    """Every ledger index the report's tables and claims cite, sorted, each once."""
    indexes: list[int | None] = [claim.entry for claim in report.claims]
    for section in report.sections:
        if isinstance(section, Table) and section.citations is not None:
            indexes.extend(section.citations)
    cited: set[int] = set()
    for index in indexes:
        if index is None:
            continue
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ReportPdfError(f"a citation must be a ledger index, not {index!r}")
        cited.add(index)
    return tuple(sorted(cited))


def receipt_indexes(report: Report, limit: int = RECEIPTS_LIMIT) -> tuple[int, ...]:
    """The cited entries that get a receipt, at most ``limit``: those the claims rest on first
    (the facts ``report verify`` checks), then the other cited entries from the lowest index up.
    Sorted."""
    claimed = sorted({claim.entry for claim in report.claims})
    chosen = claimed[:limit]
    if len(chosen) < limit:
        taken = set(chosen)
        chosen += [index for index in cited_indexes(report) if index not in taken][: limit - len(chosen)]
    return tuple(sorted(chosen))


def report_metadata(report: Report, report_id: str, cited: tuple[int, ...], generated_at: datetime) -> dict[str, Any]:
    """``report.json``: what ``read_pdf`` gives back as a ``ReportInfo``."""
    return {
        "format": METADATA_FORMAT,
        "kind": report.kind,
        "report_id": report_id,
        "title": report.title,
        "scope": report.scope,
        "period_start": report.period_start.isoformat(),
        "period_end": report.period_end.isoformat(),
        "generated_at": generated_at.isoformat().replace("+00:00", "Z"),
        "checkpoint": report.checkpoint_text,
        "cited_ledger_indexes": list(cited),
        "draft": bool(report.draft_notice),
        "draft_notice": report.draft_notice,
        "claims": [{"fact": c.fact, "entry": c.entry, "field": c.field, "value": c.value} for c in report.claims],
        # Present only when receipts are embedded, so reports without them keep their bytes.
        **({"ledger_receipts": {"format": "RFC 9942 COSE receipt (SCITT, RFC 9943), RFC9162_SHA256",
                                "files": {str(i): receipt_filename(i) for i in sorted(report.receipts)},
                                "cited_without_receipt": len(cited) - len(report.receipts)}}
           if report.receipts else {}),
    }  # fmt: skip


def utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ReportPdfError(f"{what} must be timezone-aware")
    return moment.astimezone(UTC)
