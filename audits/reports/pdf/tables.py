"""Tables and key-value lists as flowables. Cells are measured and wrapped once, up front, and a
long table splits page by page in linear time, its header row repeated on every page."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import Flowable, Spacer, TableStyle
from reportlab.platypus import Paragraph as RLParagraph
from reportlab.platypus import Table as RLTable

from audits.reports.pdf.document import ReportPdfError, Table
from audits.reports.pdf.styles import CELL_FONT, CELL_FONT_SIZE, markup, text_of

_CELL_PADDING = 3
LEDGER_COLUMN = "ledger #"
_MAX_CELL_CHARS = 1500
_STRIPE = colors.HexColor("#f4f6f8")


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


def table_flowables(
    table: Table, available: float, frame_height: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    columns = [str(c) for c in table.columns]
    if not columns:
        raise ReportPdfError("a table needs at least one column")
    rows = [[text_of(v) for v in row] for row in table.rows]
    for number, row in enumerate(rows):
        if len(row) != len(columns):
            raise ReportPdfError(f"table row {number} has {len(row)} cells for {len(columns)} columns")
    if table.citations is not None:
        if len(table.citations) != len(rows):
            raise ReportPdfError(f"a table has {len(rows)} rows but {len(table.citations)} citations")
        columns = [LEDGER_COLUMN, *columns]
        rows = [[text_of(index), *row] for index, row in zip(table.citations, rows, strict=True)]
    widths = _column_widths(columns, rows, available, styles["cell"])
    padding = 4  # TOPPADDING + BOTTOMPADDING below
    header = [RLParagraph(markup(name), styles["head"]) for name in columns]
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
        ("FONT", (0, 0), (-1, -1), CELL_FONT, CELL_FONT_SIZE, styles["cell"].leading),
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


def key_values_flowables(
    pairs: Sequence[tuple[str, object]], available: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    body = styles["body"]
    data = [
        [RLParagraph(markup(key), styles["key"]), RLParagraph(markup(text_of(value)), body)] for key, value in pairs
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
