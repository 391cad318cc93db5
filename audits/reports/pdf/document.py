"""The document model of a report: what a builder hands to ``build_pdf``, and the metadata
``read_pdf`` gives back. Plain data, checked when rendered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

METADATA_FORMAT = "llmops-governance/report/v1"
METADATA_FILENAME = "report.json"
VERIFY_COMMAND = "python manage.py report verify FILE.pdf"
PRODUCER = "llmops-governance reports"


class ReportPdfError(ValueError):
    """A report cannot be rendered from these inputs, or a PDF holds no readable report metadata."""


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


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


def cited_indexes(report: Report) -> tuple[int, ...]:
    """Every ledger index the report's tables cite, sorted, each once."""
    cited: set[int] = set()
    for section in report.sections:
        if isinstance(section, Table) and section.citations is not None:
            for index in section.citations:
                if index is None:
                    continue
                if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                    raise ReportPdfError(f"a citation must be a ledger index, not {index!r}")
                cited.add(index)
    return tuple(sorted(cited))


def utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ReportPdfError(f"{what} must be timezone-aware")
    return moment.astimezone(UTC)
