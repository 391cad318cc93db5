"""Compliance reports as PDFs: a small document model, a reportlab renderer, PAdES signing and
verification with pyHanko. No Django here: callers gather the data, this module lays it out.

A report is built from one signed ledger checkpoint. The cover page shows the checkpoint's origin,
tree size and root hash and carries the full signed note; every table row may cite a ledger index,
shown in a "ledger #" column. The machine-readable side travels as an embedded file,
``report.json`` (``/Names /EmbeddedFiles`` in the catalog): format, kind, id, title, scope, period,
generation time, the checkpoint text and the sorted list of cited ledger indexes. It lies in the
revision that the signature covers, so ``read_pdf`` reads back what was signed, provided
``verify_pdf_signature`` says the file was not changed after.

Caveats:

- Text is set in the PDF standard fonts (Helvetica, Courier), which are not embedded and cover
  Latin-1 and the WinAnsi extras (the em dash of signed notes among them); characters outside that
  set render as missing glyphs. Embedding a TTF would change this, at the price of bigger files.
- ``build_pdf`` is byte-for-byte deterministic. ``sign_pdf`` is not: pyHanko gives the incremental
  update a random second trailer ID and stamps ``/ModDate`` with the wall clock. The signing time
  inside the signature is ``signed_at``.
- The signature is PAdES baseline B-B: no timestamp, no revocation data. Its signing time is the
  signer's claim; the certificate's validity is checked at that time unless a time is given.
- ``validate_pdf_signature`` runs its own event loop: call ``verify_pdf_signature`` from
  synchronous code (a worker, a management command, ``sync_to_async`` in an async view).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast
from xml.sax.saxutils import escape

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.signers.pdf_signer import PdfSigningSession
from pyhanko.sign.validation import EmbeddedPdfSignature, SignatureCoverageLevel, validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfdoc import (
    PDFArray,
    PDFDictionary,
    PDFName,
    PDFObject,
    PDFStream,
    PDFString,
    PDFZCompress,
)
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, PageBreak, SimpleDocTemplate, Spacer, TableStyle
from reportlab.platypus import Paragraph as RLParagraph
from reportlab.platypus import Table as RLTable

from audits.ledger.keys import SignerKey
from audits.ledger.notes import Checkpoint
from audits.ledger.notes import parse as parse_note

METADATA_FORMAT = "llmops-governance/report/v1"
METADATA_FILENAME = "report.json"
VERIFY_COMMAND = "python manage.py report verify FILE.pdf"
SIGNATURE_FIELD = "ReportSignature"
PRODUCER = "llmops-governance reports"

# The reasons verify_pdf_signature gives, each followed by ": <detail>" where there is one.
NO_SIGNATURE = "no signature"
SIGNATURE_INVALID = "signature does not verify"
MODIFIED_AFTER_SIGNING = "the document was modified after signing"
UNTRUSTED_SIGNER = "signer certificate is not among the trusted ones"
CERTIFICATE_NOT_VALID = "signer certificate is not valid at the time checked"
UNREADABLE = "not a readable PDF"


class ReportPdfError(ValueError):
    """A report cannot be rendered from these inputs, or a PDF holds no readable report metadata."""


# ------------------------------------------------------------------------------------------------
# The document model


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


@dataclass(frozen=True)
class SignatureCheck:
    """``reason`` starts with one of the module's reason constants; ``signer`` is the signing
    certificate's subject and ``signed_at`` the signer's claimed time, when a signature was read."""

    ok: bool
    reason: str | None = None
    signer: str | None = None
    signed_at: datetime | None = None


# ------------------------------------------------------------------------------------------------
# Rendering

_PAGE_MARGIN = 18 * mm
_FOOTER_Y = 10 * mm
_PAGE_TOTAL_FORM = "pageTotal"
_CELL_FONT = "Helvetica"
_CELL_FONT_SIZE = 8
_CELL_PADDING = 3
_LEDGER_COLUMN = "ledger #"
_CHART_HEIGHT = 190
_MAX_AXIS_LABELS = 12
_MAX_CELL_CHARS = 1500
_STRIPE = colors.HexColor("#f4f6f8")
_PALETTE = [
    colors.HexColor(value)
    for value in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
]


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("ReportBody", parent=base["BodyText"], fontName="Helvetica", fontSize=9.5, leading=12.5)
    return {
        "title": ParagraphStyle("ReportTitle", parent=base["Title"], fontName="Helvetica-Bold", fontSize=20),
        "h1": ParagraphStyle("ReportH1", parent=base["Heading2"], fontName="Helvetica-Bold", spaceBefore=10),
        "h2": ParagraphStyle("ReportH2", parent=base["Heading4"], fontName="Helvetica-Bold", spaceBefore=6),
        "body": body,
        "cell": ParagraphStyle(
            "ReportCell", parent=body, fontName=_CELL_FONT, fontSize=_CELL_FONT_SIZE, leading=_CELL_FONT_SIZE + 2
        ),
        "head": ParagraphStyle(
            "ReportHead", parent=body, fontName="Helvetica-Bold", fontSize=_CELL_FONT_SIZE, leading=_CELL_FONT_SIZE + 2
        ),
        "key": ParagraphStyle("ReportKey", parent=body, fontName="Helvetica-Bold"),
        # Signed notes hold long base64 words: CJK wrapping breaks them anywhere.
        "mono": ParagraphStyle(
            "ReportMono", parent=body, fontName="Courier", fontSize=7.5, leading=9.5, wordWrap="CJK"
        ),
    }


def _markup(text: object) -> str:
    """Plain text as reportlab paragraph markup: nothing in it is taken as a tag or an entity."""
    return escape(str(text)).replace("\n", "<br/>")


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ReportPdfError(f"{what} must be timezone-aware")
    return moment.astimezone(UTC)


def _pdf_date(moment: datetime) -> str:
    return moment.strftime("D:%Y%m%d%H%M%S+00'00'")


class _ReportCanvas(Canvas):
    """Writes "page X of Y" on every page: the Y is a form XObject drawn on each page and defined
    once, at save time, when the page count is known. One pass, no page state kept in memory."""

    footer_left = ""

    def draw_footer(self) -> None:
        width, _ = self._pagesize
        self.saveState()
        self.setFont("Helvetica", 7.5)
        self.setFillColor(colors.HexColor("#555555"))
        self.drawString(_PAGE_MARGIN, _FOOTER_Y, self.footer_left)
        label = f"page {self.getPageNumber()} of "
        x = width - _PAGE_MARGIN - 70
        self.drawString(x, _FOOTER_Y, label)
        self.translate(x + stringWidth(label, "Helvetica", 7.5), _FOOTER_Y)
        self.doForm(_PAGE_TOTAL_FORM)
        self.restoreState()

    def save(self) -> None:
        if len(self._code):
            self.showPage()
        pages = self.getPageNumber() - 1
        self.beginForm(_PAGE_TOTAL_FORM)
        self.setFont("Helvetica", 7.5)
        self.setFillColor(colors.HexColor("#555555"))
        self.drawString(0, 0, str(pages))
        self.endForm()
        super().save()


def _column_widths(
    columns: Sequence[str], rows: Sequence[Sequence[str]], available: float, style: ParagraphStyle
) -> list[float]:
    """Each column's natural width (the 90th percentile of a sample of its values, set on one
    line), then a common cap chosen so the widths fill the page: narrow columns keep their
    width and stay on one line; only the widest ones wrap."""
    sample = rows[:200]
    natural = []
    for i, name in enumerate(columns):
        header = max((stringWidth(word, "Helvetica-Bold", style.fontSize) for word in name.split()), default=0)
        values = sorted(stringWidth(row[i], style.fontName, style.fontSize) for row in sample)
        typical = values[int(len(values) * 0.9)] if values else 0
        natural.append(max(header, typical, 12) + 2 * _CELL_PADDING + 1)
    if sum(natural) <= available:
        spare = available - sum(natural)
        return [w + spare * w / sum(natural) for w in natural]
    # Water-filling: the largest cap with sum(min(w, cap)) == available.
    ordered = sorted(natural)
    cap = available / len(ordered)
    for count, width in enumerate(ordered):
        narrower = sum(ordered[:count])
        if narrower + width * (len(ordered) - count) > available:
            cap = (available - narrower) / (len(ordered) - count)
            break
    return [min(w, cap) for w in natural]


class _Widths:
    """String widths in one standard font, from a per-character table: reportlab does not kern
    the standard fonts, so a width is the sum of its characters' widths, and a dictionary look-up
    per character is far cheaper than ``stringWidth`` per word."""

    def __init__(self, font: str, size: float) -> None:
        self._font, self._size = font, size
        self._chars: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        chars = self._chars
        total = 0.0
        for char in text:
            width = chars.get(char)
            if width is None:
                width = chars[char] = stringWidth(char, self._font, self._size)
            total += width
        return total


def _wrap_lines(text: str, width: float, measure: _Widths) -> list[str]:
    """``text`` broken into lines no wider than ``width``: at spaces where it can, inside a word
    (a hash, a long identifier) where it must."""
    space = measure(" ")
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").replace("\t", "    ").split("\n"):
        current, current_width = "", 0.0
        for word in paragraph.split(" "):
            word_width = measure(word)
            if current and current_width + space + word_width <= width:
                current, current_width = f"{current} {word}", current_width + space + word_width
                continue
            if current:
                lines.append(current)
            while word_width > width and len(word) > 1:
                cut, cut_width = 0, 0.0
                for char in word:
                    char_width = measure(char)
                    if cut and cut_width + char_width > width:
                        break
                    cut, cut_width = cut + 1, cut_width + char_width
                lines.append(word[:cut])
                word = word[cut:]
                word_width = measure(word)
            current, current_width = word, word_width
        lines.append(current)
    return lines


def _cell(text: str, width: float, style: ParagraphStyle, measure: _Widths, max_lines: int) -> tuple[str, float]:
    """A cell's text, wrapped to its column, and its height. Cells are plain strings, not
    Paragraphs: reportlab draws them literally (nothing is parsed as markup), and wrapping them
    here is several times faster (a 10,000-row table with one long cell in three: 20 s with a
    Paragraph per cell, 3 s like this). A value too long for one page is cut, and says so."""
    shown = text[:_MAX_CELL_CHARS]
    lines = _wrap_lines(shown, width - 2 * _CELL_PADDING, measure)
    if len(lines) > max_lines or len(shown) < len(text):
        lines = [*lines[: max_lines - 1], f"\u2026 [cut: the value has {len(text)} characters]"]
    return "\n".join(lines), style.leading * len(lines)


class _PagedTable(Flowable):
    """A table that splits page by page in linear time, repeating its header row on each page.

    reportlab's Table re-measures every remaining row at each page break, which is quadratic
    (most of the 7 s a 10,000-row table of short cells took). Here each row is measured once, up
    front, and a split cuts the slice of rows that fits, drawn as a Table with fixed row heights."""

    def __init__(
        self,
        header: list[object],
        rows: list[list[object]],
        heights: list[float],
        widths: list[float],
        commands: list[tuple[Any, ...]],
        start: int = 0,
        ends: list[float] | None = None,
    ) -> None:
        super().__init__()
        self._header, self._rows, self._heights = header, rows, heights
        self._widths, self._commands, self._start = widths, commands, start
        # _ends[i]: the height of rows[0..i]; one list shared by every remainder of the table.
        self._ends = ends if ends is not None else list(itertools.accumulate(heights[1:]))
        self.hAlign = "LEFT"

    def _height_of(self, stop: int) -> float:
        below = self._ends[self._start - 1] if self._start else 0.0
        return self._heights[0] + (self._ends[stop - 1] - below if stop > self._start else 0.0)

    def _slice(self, stop: int) -> RLTable:
        rows = self._rows[self._start : stop]
        heights = [self._heights[0], *self._heights[1 + self._start : 1 + stop]]
        table = RLTable([self._header, *rows], colWidths=self._widths, rowHeights=heights, hAlign="LEFT")
        # Keep the row stripes where they were in the whole table.
        stripes = [colors.white, _STRIPE] if self._start % 2 == 0 else [_STRIPE, colors.white]
        table.setStyle(TableStyle([*self._commands, ("ROWBACKGROUNDS", (0, 1), (-1, -1), stripes)]))
        return table

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width = sum(self._widths)
        self.height = self._height_of(len(self._rows))
        return self.width, self.height

    def split(self, availWidth: float, availHeight: float) -> list[Flowable]:
        below = self._ends[self._start - 1] if self._start else 0.0
        room = availHeight - self._heights[0] + below
        stop = bisect.bisect_right(self._ends, room + 1e-6, lo=self._start)
        if stop <= self._start:
            return []  # not even one row fits here: the frame moves the table to the next page
        if stop >= len(self._rows):
            return [self._slice(len(self._rows))]
        rest = _PagedTable(
            self._header, self._rows, self._heights, self._widths, self._commands, start=stop, ends=self._ends
        )
        return [self._slice(stop), rest]

    def draw(self) -> None:
        table = self._slice(len(self._rows))
        table.wrapOn(self.canv, self.width, self.height)
        table.drawOn(self.canv, 0, 0)


def _table_flowables(
    table: Table, available: float, frame_height: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    columns = [str(c) for c in table.columns]
    if not columns:
        raise ReportPdfError("a table needs at least one column")
    rows = [[_text(v) for v in row] for row in table.rows]
    for number, row in enumerate(rows):
        if len(row) != len(columns):
            raise ReportPdfError(f"table row {number} has {len(row)} cells for {len(columns)} columns")
    if table.citations is not None:
        if len(table.citations) != len(rows):
            raise ReportPdfError(f"a table has {len(rows)} rows but {len(table.citations)} citations")
        columns = [_LEDGER_COLUMN, *columns]
        rows = [[_text(index), *row] for index, row in zip(table.citations, rows, strict=True)]
    widths = _column_widths(columns, rows, available, styles["cell"])
    padding = 4  # TOPPADDING + BOTTOMPADDING below
    header = [RLParagraph(_markup(name), styles["head"]) for name in columns]
    heights = [max(p.wrap(w - 2 * _CELL_PADDING, 1e6)[1] for p, w in zip(header, widths, strict=True)) + padding]
    measure = _Widths(styles["cell"].fontName, styles["cell"].fontSize)
    max_lines = max(1, int((frame_height - heights[0] - padding) // styles["cell"].leading))
    cells: list[list[object]] = []
    for row in rows:
        measured = [_cell(text, widths[i], styles["cell"], measure, max_lines) for i, text in enumerate(row)]
        cells.append([cell for cell, _ in measured])
        heights.append(max(height for _, height in measured) + padding)
    if not rows:
        cells.append([RLParagraph("<i>no rows</i>", styles["cell"])] + [""] * (len(columns) - 1))
        heights.append(styles["cell"].leading + padding)
    commands: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), _CELL_FONT, _CELL_FONT_SIZE, styles["cell"].leading),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.HexColor("#44546a")),
        ("BOX", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
    ]
    if table.citations is not None:
        commands.append(("ALIGN", (0, 1), (0, -1), "RIGHT"))
    return [_PagedTable(header, cells, heights, widths, commands), Spacer(1, 8)]


def _key_values_flowables(
    pairs: Sequence[tuple[str, object]], available: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    body = styles["body"]
    data = [
        [RLParagraph(_markup(key), styles["key"]), RLParagraph(_markup(_text(value)), body)] for key, value in pairs
    ]
    if not data:
        return []
    flowable = RLTable(data, colWidths=[available * 0.3, available * 0.7], hAlign="LEFT")
    flowable.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("FONT", (0, 0), (0, -1), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#c8ced6")),
                ("LEFTPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return [flowable, Spacer(1, 8)]


def _chart_data(labels: Sequence[str], series: dict[str, list[float]], what: str) -> list[list[float]]:
    data = []
    for name, values in series.items():
        if len(values) != len(labels):
            raise ReportPdfError(f"{what}: series {name!r} has {len(values)} values for {len(labels)} labels")
        row = [float(v) for v in values]
        if not all(math.isfinite(v) for v in row):
            raise ReportPdfError(f"{what}: series {name!r} holds a value that is not a finite number")
        data.append(row)
    return data


def _sparse_labels(labels: Sequence[str]) -> list[str]:
    step = max(1, math.ceil(len(labels) / _MAX_AXIS_LABELS))
    return [str(label) if i % step == 0 else "" for i, label in enumerate(labels)]


def _legend(names: Sequence[str], width: float) -> Legend:
    legend = Legend()
    legend.colorNamePairs = [(_PALETTE[i % len(_PALETTE)], str(name)) for i, name in enumerate(names)]
    legend.fontName = "Helvetica"
    legend.fontSize = 7.5
    legend.alignment = "right"
    legend.boxAnchor = "sw"
    legend.x = 40
    legend.y = 8
    legend.dx = legend.dy = 7
    legend.deltay = 10
    widest = max((stringWidth(str(name), "Helvetica", 7.5) for name in names), default=0)
    legend.deltax = widest + 30
    per_row = max(1, int((width - 40) // legend.deltax))
    legend.columnMaximum = max(1, math.ceil(len(names) / per_row))
    return legend


def _chart_flowables(
    chart: BarChart | LineChart, available: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    is_bar = isinstance(chart, BarChart)
    labels = [str(label) for label in (chart.categories if isinstance(chart, BarChart) else chart.x_labels)]
    title = RLParagraph(_markup(chart.title), styles["h2"])
    data = _chart_data(labels, chart.series, chart.title or "a chart")
    if not labels or not data:
        return [KeepTogether([title, RLParagraph("<i>no data</i>", styles["body"])]), Spacer(1, 8)]
    names = list(chart.series)
    legend = _legend(names, available)
    legend_rows = legend.columnMaximum
    legend_height = legend_rows * legend.deltay + 6
    drawing = Drawing(available, _CHART_HEIGHT + legend_height)
    plot = VerticalBarChart() if is_bar else HorizontalLineChart()
    shown = _sparse_labels(labels)
    # Long labels are set at an angle; room below the axis for them, down to the legend.
    longest = max(stringWidth(label, "Helvetica", 7) for label in shown)
    slanted = longest > (available - 50) / len(labels) - 4
    below_axis = 14 + (longest * 0.5 + 8 if slanted else 0)
    plot.x = 40
    plot.y = legend_height + below_axis
    plot.width = available - 50
    plot.height = _CHART_HEIGHT - below_axis - 10
    plot.data = data
    plot.categoryAxis.categoryNames = shown
    plot.categoryAxis.labels.fontName = "Helvetica"
    plot.categoryAxis.labels.fontSize = 7
    if slanted:
        plot.categoryAxis.labels.angle = 30
        plot.categoryAxis.labels.boxAnchor = "ne"
    plot.valueAxis.labels.fontName = "Helvetica"
    plot.valueAxis.labels.fontSize = 7
    low = min(min(row) for row in data)
    high = max(max(row) for row in data)
    if low >= 0:
        plot.valueAxis.valueMin = 0
    if high == low:
        plot.valueAxis.valueMax = high + 1
    for i in range(len(data)):
        colour = _PALETTE[i % len(_PALETTE)]
        if isinstance(plot, VerticalBarChart):
            plot.bars[i].fillColor = colour
            plot.bars[i].strokeColor = None
        else:
            plot.lines[i].strokeColor = colour
            plot.lines[i].strokeWidth = 1.5
    drawing.add(plot)
    drawing.add(legend)
    return [KeepTogether([title, drawing]), Spacer(1, 8)]


def _section_flowables(
    section: Section, available: float, frame_height: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    if isinstance(section, Heading):
        return [RLParagraph(_markup(section.text), styles["h1"])]
    if isinstance(section, Paragraph):
        return [RLParagraph(_markup(section.text), styles["body"]), Spacer(1, 4)]
    if isinstance(section, Table):
        return _table_flowables(section, available, frame_height, styles)
    if isinstance(section, KeyValues):
        return _key_values_flowables(section.pairs, available, styles)
    if isinstance(section, BarChart | LineChart):
        return _chart_flowables(section, available, styles)
    raise ReportPdfError(f"unknown section type {type(section).__name__}")


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


def _default_id(report: Report) -> str:
    content = json.dumps(
        [report.kind, report.title, report.scope, str(report.period_start), str(report.period_end)]
        + [report.generated_at.isoformat(), report.checkpoint_text]
        + [[type(s).__name__, dataclasses.asdict(s)] for s in report.sections],
        default=str,
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def _metadata(report: Report, report_id: str, cited: tuple[int, ...], generated_at: datetime) -> dict[str, Any]:
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
    }


class _MimeTypeName(PDFObject):
    """A PDF name holding a MIME type: reportlab's PDFName writes the "/" of "application/json"
    as is, which a reader takes for the start of a second name; here it is written as #2F."""

    def __init__(self, mime_type: str) -> None:
        self.mime_type = mime_type

    def format(self, document: object) -> bytes:
        return b"/" + self.mime_type.replace("/", "#2F").encode("ascii")


def _embed_metadata(canvas: Canvas, payload: bytes, generated_at: datetime) -> None:
    stream = PDFStream(
        PDFDictionary(
            {
                "Type": PDFName("EmbeddedFile"),
                "Subtype": _MimeTypeName("application/json"),
                "Params": PDFDictionary({"Size": len(payload), "ModDate": PDFString(_pdf_date(generated_at))}),
            }
        ),
        payload,
        filters=[PDFZCompress],
    )
    filespec = PDFDictionary(
        {
            "Type": PDFName("Filespec"),
            "F": PDFString(METADATA_FILENAME),
            "UF": PDFString(METADATA_FILENAME),
            "Desc": PDFString("machine-readable report metadata: checkpoint and cited ledger indexes"),
            "AFRelationship": PDFName("Data"),
            "EF": PDFDictionary({"F": stream}),
        }
    )
    names = PDFDictionary(
        {"EmbeddedFiles": PDFDictionary({"Names": PDFArray([PDFString(METADATA_FILENAME), filespec])})}
    )
    canvas.setCatalogEntry("Names", names)


def build_pdf(report: Report) -> bytes:
    """Render ``report`` as a PDF: a cover page naming the checkpoint it was built from, then its
    sections. The same report gives the same bytes. Raises ``ReportPdfError`` for a malformed
    report and ``NoteError`` (also a ``ValueError``) for a checkpoint that is not a signed note."""
    generated_at = _utc(report.generated_at, "generated_at")
    checkpoint, _ = parse_note(report.checkpoint_text)
    cited = cited_indexes(report)
    if cited and cited[-1] >= checkpoint.size:
        raise ReportPdfError(
            f"the report cites ledger entry {cited[-1]}, beyond the checkpoint's tree size {checkpoint.size}"
        )
    report_id = report.report_id or _default_id(report)
    metadata = _metadata(report, report_id, cited, generated_at)
    payload = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    styles = _styles()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_PAGE_MARGIN,
        rightMargin=_PAGE_MARGIN,
        topMargin=_PAGE_MARGIN,
        bottomMargin=_PAGE_MARGIN,
        title=report.title,
        author=PRODUCER,
        subject=f"{report.kind} report {report_id}",
        # The trailer /ID is a digest of the info strings: the keywords make it the report's own.
        keywords=f"sha256:{hashlib.sha256(payload).hexdigest()}",
        creator=PRODUCER,
        invariant=1,
    )
    available = doc.width
    frame_height = doc.height - 12  # the frame's own top and bottom padding
    footer = f"{report.title} \u00b7 {report.kind} {report_id}"
    if stringWidth(footer, "Helvetica", 7.5) > available - 90:
        footer = f"{report.kind} {report_id}"

    def first_page(canvas: Canvas, _doc: object) -> None:
        canvas.setDateFormatter(lambda *_: _pdf_date(generated_at))
        _embed_metadata(canvas, payload, generated_at)
        later_pages(canvas, _doc)

    def later_pages(canvas: Canvas, _doc: object) -> None:
        report_canvas = cast(_ReportCanvas, canvas)
        report_canvas.footer_left = footer
        report_canvas.draw_footer()

    story: list[Flowable] = _cover(report, report_id, generated_at, checkpoint, available, styles)
    for section in report.sections:
        story.extend(_section_flowables(section, available, frame_height, styles))
    doc.build(story, onFirstPage=first_page, onLaterPages=later_pages, canvasmaker=_ReportCanvas)
    return buffer.getvalue()


def _cover(
    report: Report,
    report_id: str,
    generated_at: datetime,
    checkpoint: Checkpoint,
    available: float,
    styles: dict[str, ParagraphStyle],
) -> list[Flowable]:
    root_b64 = checkpoint.body().split("\n")[2]
    story: list[Flowable] = [
        RLParagraph(_markup(report.title), styles["title"]),
        Spacer(1, 6),
    ]
    story += _key_values_flowables(
        [
            ("Scope", report.scope),
            ("Period", f"{report.period_start.isoformat()} to {report.period_end.isoformat()}"),
            ("Generated", generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("Report", f"{report.kind} {report_id}"),
        ],
        available,
        styles,
    )
    story.append(RLParagraph("Built from ledger checkpoint", styles["h1"]))
    story += _key_values_flowables(
        [
            ("Log origin", checkpoint.origin),
            ("Tree size", f"{checkpoint.size} entries (indexes 0 to {checkpoint.size - 1})"),
            ("Root hash (base64)", root_b64),
            ("Root hash (hex)", checkpoint.root.hex()),
        ],
        available,
        styles,
    )
    story.append(RLParagraph("Signed checkpoint", styles["h2"]))
    story.append(RLParagraph(_markup(report.checkpoint_text.rstrip("\n")), styles["mono"]))
    story.append(RLParagraph("How to verify", styles["h1"]))
    story.append(
        RLParagraph(
            _markup(
                "This PDF is signed (PAdES) by the service. To check the signature, that nothing was "
                f"changed after signing, and the checkpoint above against the ledger's keys, run: {VERIFY_COMMAND}. "
                f'Rows with a "{_LEDGER_COLUMN}" cite ledger entries by index; each lies inside the checkpoint '
                "and can be proven against it with an inclusion proof. The checkpoint and the cited indexes "
                f"are also embedded, machine-readable, as the attachment {METADATA_FILENAME}."
            ),
            styles["body"],
        )
    )
    story.append(PageBreak())
    return story


# ------------------------------------------------------------------------------------------------
# Signing


def private_key_from_signer(signer: SignerKey) -> Ed25519PrivateKey:
    """The Ed25519 key of a ledger signer key, to sign reports with the key that signs checkpoints."""
    return signer.private_key


def service_certificate(
    private_key: Ed25519PrivateKey, *, common_name: str, valid_from: datetime, valid_to: datetime
) -> x509.Certificate:
    """A self-signed certificate for ``private_key``, for signing reports. The serial number is
    derived from the public key, so the same key and inputs give the same certificate (Ed25519
    signatures are deterministic). Verifiers trust it by being handed it, not through a CA."""
    public = private_key.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    serial = int.from_bytes(hashlib.sha256(b"report-signing-certificate\n" + raw).digest()[:16], "big") >> 1
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial or 1)
        .not_valid_before(_utc(valid_from, "valid_from"))
        .not_valid_after(_utc(valid_to, "valid_to"))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(private_key, None)
    )


def _asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


class _PdfSignerAt(signers.PdfSigner):
    """pyHanko takes the signing time from the wall clock; a report is signed at a given time."""

    def __init__(self, *args: Any, signed_at: datetime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signed_at = signed_at

    def init_signing_session(self, pdf_out: BasePdfFileWriter, existing_fields_only: bool = False) -> PdfSigningSession:
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._signed_at
        return session


def sign_pdf(
    pdf: bytes, *, private_key: Ed25519PrivateKey, certificate: x509.Certificate, reason: str, signed_at: datetime
) -> bytes:
    """Sign ``pdf`` as PAdES baseline B-B with Ed25519 (SHA-512 message digest, RFC 8419) as a
    certification signature that permits no later change. The signature covers the whole file
    as given; anything appended afterwards shows up in ``verify_pdf_signature``."""
    signed_at = _utc(signed_at, "signed_at")
    cert = _asn1_certificate(certificate)
    key = asn1_keys.PrivateKeyInfo.load(private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()))
    signer = signers.SimpleSigner(
        signing_cert=cert, signing_key=key, cert_registry=SimpleCertificateStore.from_certs([cert])
    )
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        reason=reason,
        md_algorithm="sha512",
        subfilter=SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    output = _PdfSignerAt(meta, signer, signed_at=signed_at).sign_pdf(writer)
    return output.getvalue()


# ------------------------------------------------------------------------------------------------
# Reading and verifying


def _reader(pdf: bytes) -> PdfFileReader:
    return PdfFileReader(io.BytesIO(pdf), strict=False)


def _embedded_file(reader: PdfFileReader, filename: str) -> bytes | None:
    try:
        tree = reader.root["/Names"]["/EmbeddedFiles"]
    except KeyError:
        return None
    pending = [tree]
    while pending:
        node = pending.pop()
        if "/Kids" in node:
            pending.extend(kid.get_object() for kid in node["/Kids"])
        names = node.get("/Names")
        if names is None:
            continue
        for i in range(0, len(names) - 1, 2):
            if str(names[i]) == filename:
                return bytes(names[i + 1].get_object()["/EF"]["/F"].get_object().data)
    return None


def read_pdf(pdf: bytes) -> ReportInfo:
    """The report metadata embedded in ``pdf``. It reads the latest revision and checks nothing:
    call ``verify_pdf_signature`` first to know the metadata is what the service signed."""
    try:
        reader = _reader(pdf)
        payload = _embedded_file(reader, METADATA_FILENAME)
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise ReportPdfError(f"{UNREADABLE}: {exc}") from None
    if payload is None:
        raise ReportPdfError(f"the PDF holds no {METADATA_FILENAME}: not a report of this service")
    try:
        data = json.loads(payload)
        if data.get("format") != METADATA_FORMAT:
            raise ReportPdfError(f"unknown report metadata format {data.get('format')!r}")
        return ReportInfo(
            format=data["format"],
            kind=data["kind"],
            report_id=data["report_id"],
            title=data["title"],
            scope=data["scope"],
            period_start=data["period_start"],
            period_end=data["period_end"],
            generated_at=datetime.fromisoformat(data["generated_at"]),
            checkpoint_text=data["checkpoint"],
            cited_indexes=tuple(int(i) for i in data["cited_ledger_indexes"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ReportPdfError):
            raise
        raise ReportPdfError(f"{METADATA_FILENAME} is malformed: {exc!r}") from None


def verify_pdf_signature(
    pdf: bytes, *, trusted: Sequence[x509.Certificate], at: datetime | None = None
) -> SignatureCheck:
    """Check that ``pdf`` carries a signature that verifies, covers every byte of the file, and
    was made with a certificate in ``trusted`` (or issued under one). The signer's certificate
    must be valid at ``at``, or, when ``at`` is not given, at the signing time the signature
    claims: a B-B signature carries no timestamp, and an archived report should not turn invalid
    the day its certificate expires. Nothing is fetched from the network and no revocation is
    checked. The first failure wins, in this order: unreadable, no signature, signed bytes
    altered, signature invalid, modified after signing, untrusted signer, certificate not valid.
    """
    at = _utc(at, "at") if at is not None else None
    try:
        reader = _reader(pdf)
        signatures = reader.embedded_signatures
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        return SignatureCheck(ok=False, reason=f"{UNREADABLE}: {exc}")
    if not signatures:
        return SignatureCheck(ok=False, reason=NO_SIGNATURE)
    context = ValidationContext(
        trust_roots=[_asn1_certificate(c) for c in trusted],
        allow_fetching=False,
        revocation_mode="soft-fail",
        moment=at,
    )
    checks = [_check_one(signature, context, at) for signature in signatures]
    failed = [check for check in checks if not check.ok]
    return failed[0] if failed else checks[-1]


def _check_one(embedded: EmbeddedPdfSignature, context: ValidationContext, at: datetime | None) -> SignatureCheck:
    try:
        status = validate_pdf_signature(embedded, context)
    except Exception as exc:
        # Whatever a forged or damaged signature makes pyHanko raise is a failed check, not a crash.
        return SignatureCheck(ok=False, reason=f"{SIGNATURE_INVALID}: {type(exc).__name__}: {exc}")
    certificate = status.signing_cert
    signer = certificate.subject.human_friendly
    signed_at = status.signer_reported_dt
    checked_at = at or signed_at
    if not status.intact:
        reason = f"{MODIFIED_AFTER_SIGNING}: the signed bytes no longer match the digest in the signature"
    elif not status.valid:
        reason = f"{SIGNATURE_INVALID}: the cryptographic signature is not valid for the signed bytes"
    elif status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        level = status.modification_level.name.lower() if status.modification_level is not None else "unknown"
        coverage = status.coverage.name.lower() if status.coverage is not None else "unknown"
        reason = f"{MODIFIED_AFTER_SIGNING}: the signature covers {coverage}, and later changes are of kind {level}"
    elif not status.trusted:
        reason = f"{UNTRUSTED_SIGNER}: {signer}"
    # RFC 5280 path validation never checks a trust anchor's own validity period, and a
    # self-signed service certificate is its own anchor: check it here.
    elif checked_at is None or not certificate.not_valid_before <= checked_at <= certificate.not_valid_after:
        reason = (
            f"{CERTIFICATE_NOT_VALID}: {signer} is valid from {certificate.not_valid_before.isoformat()} "
            f"to {certificate.not_valid_after.isoformat()}, checked at {checked_at.isoformat() if checked_at else '?'}"
        )
    elif not status.bottom_line:
        reason = f"{SIGNATURE_INVALID}: {status.summary()}"
    else:
        return SignatureCheck(ok=True, signer=signer, signed_at=signed_at)
    return SignatureCheck(ok=False, reason=reason, signer=signer, signed_at=signed_at)


__all__ = [
    "CERTIFICATE_NOT_VALID",
    "MODIFIED_AFTER_SIGNING",
    "NO_SIGNATURE",
    "SIGNATURE_INVALID",
    "UNREADABLE",
    "UNTRUSTED_SIGNER",
    "VERIFY_COMMAND",
    "BarChart",
    "Heading",
    "KeyValues",
    "LineChart",
    "Paragraph",
    "Report",
    "ReportInfo",
    "ReportPdfError",
    "SignatureCheck",
    "Table",
    "build_pdf",
    "cited_indexes",
    "private_key_from_signer",
    "read_pdf",
    "service_certificate",
    "sign_pdf",
    "verify_pdf_signature",
]
