"""Tables and key-value lists as flowables. Cells are measured and wrapped once, up front, and a
long table splits page by page in linear time, its header row repeated on every page.

Words are never split: a column is at least as wide as its longest word (its header's included).
When those widths do not fit a portrait page the table is set on landscape pages (in 7 or 6.5
point rather than 8 if it must), and when they do not fit a landscape page either each row becomes a
card of "column  value" lines. Only a word
wider than a quarter of a landscape page (a long identifier, a token) breaks, after "_", "/",
"-" or "." where it has one, anywhere where it has none. Digests (``Digest`` cells, and plain
cells holding 64 hex digits) are printed whole in small monospace where the column allows, else
as a prefix and a reference to the report's "Digests" appendix.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import CondPageBreak, Flowable, Spacer, TableStyle
from reportlab.platypus import Paragraph as RLParagraph
from reportlab.platypus import Table as RLTable

from audits.reports.pdf.document import Digest, ReportPdfError, Table
from audits.reports.pdf.styles import (
    CELL_FONT,
    CELL_FONT_SIZE,
    DIGEST_FONT_SIZE,
    MONO,
    SANS_BOLD,
    covered,
    draw_text,
    font_of,
    markup,
    text_of,
)

_CELL_PADDING = 3
LEDGER_COLUMN = "ledger #"
DIGESTS_HEADING = "Digests"
_MAX_CELL_CHARS = 1500
_STRIPE = colors.HexColor("#f4f6f8")
_DIGEST_PREFIX = 12
_SMALL_CELL_FONT_SIZES = (7, 6.5)  # a landscape table's, before it turns to cards
_LOOKS_LIKE_DIGEST = re.compile(r"(?:sha256:)?[0-9a-fA-F]{64}")
_IDENTIFIER_BREAK = re.compile(r"(?<=[_/.\-])")

Orientation = Literal["portrait", "landscape"]


@dataclass(frozen=True)
class Frames:
    """The frame (text area) of a portrait and of a landscape page: (width, height)."""

    portrait: tuple[float, float]
    landscape: tuple[float, float]

    def size(self, orientation: Orientation) -> tuple[float, float]:
        return self.portrait if orientation == "portrait" else self.landscape


def _table_style(font: str, size: float, leading: float) -> list[tuple[Any, ...]]:
    """The look every report table shares: the cell font, padding, a shaded header, a frame."""
    return [
        ("FONT", (0, 0), (-1, -1), font, size, leading),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde3ea")),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.HexColor("#44546a")),
        ("BOX", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
    ]


class DigestIndex:
    """The digests printed short, each with the reference under which the report's appendix
    lists it in full (D1, D2, ...; one reference per distinct digest)."""

    def __init__(self) -> None:
        self.references: dict[str, str] = {}

    def short(self, value: str) -> str:
        reference = self.references.setdefault(value, f"D{len(self.references) + 1}")
        hex_start = value.find(":") + 1
        return f"{value[: hex_start + _DIGEST_PREFIX]}\u2026 [{reference}]"

    def appendix(self, available: float, styles: dict[str, ParagraphStyle]) -> list[Flowable]:
        if not self.references:
            return []
        longest = max(len(value) for value in self.references)
        # Wide enough for the longest reference and for the "ref" header in its bold face, on one line.
        head = styles["head"]
        reference_width = (
            max(stringWidth(f"D{len(self.references)}", MONO, 7.0), stringWidth("ref", head.fontName, head.fontSize))
            + 2 * _CELL_PADDING
            + 4
        )
        room = available - reference_width - 2 * _CELL_PADDING - 1
        # One line per digest: the font shrinks for a digest longer than a sha256 in hex.
        size = min(7.0, room / max(1.0, stringWidth("0" * longest, MONO, 1)))
        header: list[object] = [RLParagraph("ref", styles["head"]), RLParagraph("digest", styles["head"])]
        rows: list[list[object]] = [[reference, value] for value, reference in self.references.items()]
        heights = [styles["head"].leading + 4] + [size + 5] * len(rows)
        commands = _table_style(MONO, size, size + 3)
        table = _PagedTable(header, rows, heights, [reference_width, available - reference_width], commands)
        intro = (
            "Digests too long for their table column are printed there as a prefix and a reference "
            "(D1, D2, ...); here is each in full."
        )
        # The heading and its introduction stay with the table's first rows (never alone at a page's foot).
        return [
            CondPageBreak(60 + heights[0] + 3 * heights[1]),  # the heading, its text, the header, three rows
            RLParagraph(DIGESTS_HEADING, styles["h1"]), RLParagraph(intro, styles["body"]), table,
        ]  # fmt: skip


class _Widths:
    """String widths in one font and size, from a per-character table: reportlab does not kern,
    so a width is the sum of its characters' widths (each in the font that draws it: a fallback
    for what the font lacks), and a dictionary look-up per character is far cheaper than
    ``stringWidth`` per word."""

    def __init__(self, font: str, size: float) -> None:
        self._font, self._size = font, size
        self._chars: dict[str, float] = {}
        self._words: dict[str, float] = {}

    def __call__(self, text: str) -> float:
        chars = self._chars
        total = 0.0
        for char in text:
            width = chars.get(char)
            if width is None:
                width = chars[char] = stringWidth(char, font_of(char, self._font), self._size)
            total += width
        return total

    def word(self, word: str) -> float:
        """A word's width, remembered: the same words recur down a column."""
        width = self._words.get(word)
        if width is None:
            width = self(word)
            if len(self._words) < 100_000:
                self._words[word] = width
        return width


def _pieces(word: str, width: float, measure: _Widths) -> list[str]:
    """A word too wide for ``width`` as lines: broken after "_", "/", "-" or "." where that
    gives pieces that fit, anywhere where it does not."""
    lines: list[str] = []
    current = ""
    for piece in _IDENTIFIER_BREAK.split(word):
        if not piece:
            continue
        if measure(current + piece) <= width:
            current += piece
            continue
        if current:
            lines.append(current)
        current = piece
        while measure(current) > width and len(current) > 1:
            cut, cut_width = 0, 0.0
            for char in current:
                char_width = measure(char)
                if cut and cut_width + char_width > width:
                    break
                cut, cut_width = cut + 1, cut_width + char_width
            lines.append(current[:cut])
            current = current[cut:]
    lines.append(current)
    return lines


def _wrap_lines(text: str, width: float, measure: _Widths) -> list[str]:
    """``text`` broken into lines no wider than ``width``, at spaces; a word wider than the whole
    line (only an over-long one: columns are as wide as their words) is broken by ``_pieces``."""
    space = measure(" ")
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").replace("\t", "    ").split("\n"):
        current, current_width = "", 0.0
        for word in paragraph.split(" "):
            word_width = measure.word(word)
            if current and current_width + space + word_width <= width:
                current, current_width = f"{current} {word}", current_width + space + word_width
                continue
            if current:
                lines.append(current)
            if word_width > width:
                *whole, word = _pieces(word, width, measure)
                lines.extend(whole)
                word_width = measure(word)
            current, current_width = word, word_width
        lines.append(current)
    return lines


class _Lines(Flowable):
    """A cell's lines, drawn each character in a font that has it: for the cells a table cannot
    draw as plain strings in its one font (digests in monospace, CJK in the fallback font)."""

    def __init__(self, lines: list[str], font: str, size: float, leading: float) -> None:
        super().__init__()
        self._lines, self._font, self._size, self._leading = lines, font, size, leading
        self.width, self.height = 0.0, leading * len(lines)

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width = availWidth
        return self.width, self.height

    def draw(self) -> None:
        for number, line in enumerate(self._lines):
            draw_text(self.canv, 0, self.height - self._size - number * self._leading, line, self._font, self._size)


def _is_digest(value: object) -> bool:
    return isinstance(value, Digest) or (isinstance(value, str) and _LOOKS_LIKE_DIGEST.fullmatch(value) is not None)


def _longest_word(text: str, measure: _Widths, limit: float) -> float:
    """The width a column needs so that no word of ``text`` breaks; a word wider than ``limit``
    counts as its widest piece between "_", "/", "-" and ".", at most ``limit``."""
    longest = 0.0
    for word in text.replace("\n", " ").replace("\t", " ").split(" "):
        width = measure.word(word)
        if width > limit:
            width = min(limit, max(measure(piece) for piece in _IDENTIFIER_BREAK.split(word)))
        longest = max(longest, width)
    return longest


@dataclass
class _Column:
    minimum: float  # the longest word, padding included
    natural: float  # a typical value set on one line
    digest_full: float = 0.0  # the longest digest in full, 0 for a column without one
    digest_short: float = 0.0


def _fill(minimums: list[float], naturals: list[float], available: float) -> list[float]:
    """Widths from each column's minimum towards its natural width, then the page's width:
    every column gets its minimum, the spare room goes to the columns that would wrap most."""
    spare = available - sum(minimums)
    wants = [max(0.0, n - m) for m, n in zip(minimums, naturals, strict=True)]
    if sum(wants) <= spare:
        widths = [m + w for m, w in zip(minimums, wants, strict=True)]
        rest = available - sum(widths)
        return [w + rest * w / sum(widths) for w in widths]
    # Water-filling: the largest cap with sum(min(want, cap)) == spare.
    ordered = sorted(wants)
    cap = spare / len(ordered)
    for count, want in enumerate(ordered):
        if sum(ordered[:count]) + want * (len(ordered) - count) > spare:
            cap = (spare - sum(ordered[:count])) / (len(ordered) - count)
            break
    return [m + min(w, cap) for m, w in zip(minimums, wants, strict=True)]


def _columns(
    names: list[str], rows: list[list[object]], measure: _Widths, limit: float, style: ParagraphStyle
) -> list[_Column]:
    head = _Widths(SANS_BOLD, style.fontSize)
    pad = 2 * _CELL_PADDING + 1
    mono_char = stringWidth("0", MONO, DIGEST_FONT_SIZE)
    result = []
    for i, name in enumerate(names):
        header = _longest_word(name, head, limit)
        longest, digest, lengths = 12.0, 0, []
        for row in rows:
            value = row[i]
            if _is_digest(value):
                digest = max(digest, len(str(value)))
            else:
                text = value if isinstance(value, str) else str(value)
                longest = max(longest, _longest_word(text, measure, limit))
        for row in rows[:200]:
            value = row[i]
            lengths.append(0.0 if _is_digest(value) else measure(str(value)[:_MAX_CELL_CHARS]))
        lengths.sort()
        typical = lengths[int(len(lengths) * 0.9)] if lengths else 0.0
        column = _Column(minimum=max(header, longest) + pad, natural=max(header, longest, typical) + pad)
        if digest:
            column.digest_full = digest * mono_char + pad
            column.digest_short = (_DIGEST_PREFIX + 7 + 9) * mono_char + pad  # "sha256:" + "… [D999]"
        result.append(column)
    return result


def _scaled(width: float, size: float) -> float:
    """A text width measured at the cell font's size (padding included), at ``size``."""
    pad = 2 * _CELL_PADDING + 1
    return (width - pad) * size / CELL_FONT_SIZE + pad


def _choose(columns: list[_Column], frames: Frames) -> tuple[Orientation, float, bool] | None:
    """The page orientation, the cell font's size and whether digests print in full, the first
    that fits of: portrait, landscape, landscape in smaller fonts; None: none fits."""
    options: list[tuple[Orientation, float, bool]] = [
        ("portrait", CELL_FONT_SIZE, True), ("portrait", CELL_FONT_SIZE, False),
        ("landscape", CELL_FONT_SIZE, True), ("landscape", CELL_FONT_SIZE, False),
        *[("landscape", size, full) for size in _SMALL_CELL_FONT_SIZES for full in (True, False)],
    ]  # fmt: skip
    for orientation, size, full in options:
        needed = sum(max(_scaled(c.minimum, size), c.digest_full if full else c.digest_short) for c in columns)
        if needed <= frames.size(orientation)[0]:
            return orientation, size, full
    return None


def table_flowables(
    table: Table, frames: Frames, styles: dict[str, ParagraphStyle], digests: DigestIndex
) -> tuple[Orientation, list[Flowable]]:
    """The table's flowables and the orientation of the pages they are laid out for."""
    columns = [str(c) for c in table.columns]
    if not columns:
        raise ReportPdfError("a table needs at least one column")
    rows: list[list[object]] = [[v if isinstance(v, Digest) else text_of(v) for v in row] for row in table.rows]
    for number, row in enumerate(rows):
        if len(row) != len(columns):
            raise ReportPdfError(f"table row {number} has {len(row)} cells for {len(columns)} columns")
    if table.citations is not None:
        if len(table.citations) != len(rows):
            raise ReportPdfError(f"a table has {len(rows)} rows but {len(table.citations)} citations")
        columns = [LEDGER_COLUMN, *columns]
        rows = [[text_of(index), *row] for index, row in zip(table.citations, rows, strict=True)]
    style = styles["cell"]
    measure = _Widths(style.fontName, style.fontSize)
    limit = frames.landscape[0] / 4
    measured = _columns(columns, rows, measure, limit, style)
    chosen = _choose(measured, frames)
    if chosen is None:
        return "portrait", _cards(columns, rows, frames.portrait[0], styles, measure, digests)
    orientation, size, full_digests = chosen
    available, frame_height = frames.size(orientation)
    frame_height -= 12  # the frame's own top and bottom padding
    minimums = [max(_scaled(c.minimum, size), c.digest_full if full_digests else c.digest_short) for c in measured]
    naturals = [max(m, _scaled(c.natural, size)) for m, c in zip(minimums, measured, strict=True)]
    widths = _fill(minimums, naturals, available)
    head_style = styles["head"]
    if size != style.fontSize:
        style = ParagraphStyle("ReportCellSmall", parent=style, fontSize=size, leading=size + 2)
        head_style = ParagraphStyle("ReportHeadSmall", parent=head_style, fontSize=size, leading=size + 2)
        measure = _Widths(style.fontName, size)

    padding = 4  # TOPPADDING + BOTTOMPADDING below
    header = [RLParagraph(markup(name), head_style) for name in columns]
    heights = [max(p.wrap(w - 2 * _CELL_PADDING, 1e6)[1] for p, w in zip(header, widths, strict=True)) + padding]
    max_lines = max(1, int((frame_height - heights[0] - padding) // style.leading))
    # A column of digests only is drawn in monospace by a table command, its cells plain strings:
    # a flowable per cell costs a third more time in a 10,000-row table.
    mono = {i for i in range(len(columns)) if rows and all(_is_digest(row[i]) for row in rows)}
    cells: list[list[object]] = []
    for row in rows:
        drawn = [
            _cell(value, widths[i], full_digests, style, measure, max_lines, digests, plain=i in mono)
            for i, value in enumerate(row)
        ]
        cells.append([cell for cell, _ in drawn])
        heights.append(max(height for _, height in drawn) + padding)
    if not rows:
        cells.append([RLParagraph("<i>no rows</i>", style)] + [""] * (len(columns) - 1))
        heights.append(style.leading + padding)
    commands = _table_style(CELL_FONT, style.fontSize, style.leading)
    if table.citations is not None:
        commands.append(("ALIGN", (0, 1), (0, -1), "RIGHT"))
    commands += [("FONT", (i, 1), (i, -1), MONO, DIGEST_FONT_SIZE, style.leading) for i in sorted(mono)]
    return orientation, [_PagedTable(header, cells, heights, widths, commands), Spacer(1, 8)]


def _cell(
    value: object,
    width: float,
    full_digests: bool,
    style: ParagraphStyle,
    measure: _Widths,
    max_lines: int,
    digests: DigestIndex,
    *,
    plain: bool = False,
) -> tuple[object, float]:
    """A cell as drawn, wrapped to its column, and its height. Plain text is a string, not a
    Paragraph: reportlab draws it literally (nothing is parsed as markup), and wrapping it here
    is several times faster (a 10,000-row table with one long cell in three: 20 s with a
    Paragraph per cell, 3 s like this). A value too long for one page is cut, and says so."""
    if _is_digest(value):
        text = str(value)
        if not full_digests or stringWidth(text, MONO, DIGEST_FONT_SIZE) > width - 2 * _CELL_PADDING:
            text = digests.short(text)
        if plain:
            return text, style.leading
        return _Lines([text], MONO, DIGEST_FONT_SIZE, style.leading), style.leading
    text = value if isinstance(value, str) else str(value)
    shown = text[:_MAX_CELL_CHARS]
    lines = _wrap_lines(shown, width - 2 * _CELL_PADDING, measure)
    if len(lines) > max_lines or len(shown) < len(text):
        lines = [*lines[: max_lines - 1], f"\u2026 [cut: the value has {len(text)} characters]"]
    height = style.leading * len(lines)
    if covered(shown, CELL_FONT):
        return "\n".join(lines), height
    return _Lines(lines, CELL_FONT, style.fontSize, style.leading), height


def _cards(
    columns: list[str],
    rows: list[list[object]],
    available: float,
    styles: dict[str, ParagraphStyle],
    measure: _Widths,
    digests: DigestIndex,
) -> list[Flowable]:
    """A table too wide for a landscape page: each row as a small card of "column  value" lines."""
    style = styles["cell"]
    head = _Widths(SANS_BOLD, style.fontSize)
    key_width = min(available * 0.35, max(head(name) for name in columns) + 2 * _CELL_PADDING + 2)
    value_width = available - key_width
    names = [RLParagraph(markup(name), styles["head"]) for name in columns]
    commands = [
        ("FONT", (0, 0), (-1, -1), CELL_FONT, CELL_FONT_SIZE, style.leading),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("RIGHTPADDING", (0, 0), (-1, -1), _CELL_PADDING),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef1f4")),
        ("BOX", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
    ]
    flowables: list[Flowable] = []
    for row in rows or [["" for _ in columns]]:
        cells, heights = [], []
        for name, value in zip(names, row, strict=True):
            cell, height = _cell(value, value_width, True, style, measure, 10_000, digests)
            name_height = name.wrap(key_width - 2 * _CELL_PADDING, 1e6)[1]
            cells.append([name, cell])
            heights.append(max(height, name_height) + 2)
        card = RLTable(cells, colWidths=[key_width, value_width], rowHeights=heights, hAlign="LEFT")
        card.setStyle(TableStyle(commands))
        flowables += [card, Spacer(1, 5)]
    return flowables


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


def value_flowable(value: object, width: float, styles: dict[str, ParagraphStyle], digests: DigestIndex) -> Flowable:
    """A value of a key-value list: a paragraph, or a digest in monospace (in full where it fits)."""
    if _is_digest(value):
        text = str(value)
        if stringWidth(text, MONO, DIGEST_FONT_SIZE) > width - 2 * _CELL_PADDING:
            text = digests.short(text)
        return RLParagraph(markup(text, MONO), styles["digest"])
    return RLParagraph(markup(text_of(value)), styles["body"])


def key_values_flowables(
    pairs: Sequence[tuple[str, object]], available: float, styles: dict[str, ParagraphStyle], digests: DigestIndex
) -> list[Flowable]:
    data = [
        [RLParagraph(markup(key), styles["key"]), value_flowable(value, available * 0.7, styles, digests)]
        for key, value in pairs
    ]
    if not data:
        return []
    flowable = RLTable(data, colWidths=[available * 0.3, available * 0.7], hAlign="LEFT")
    flowable.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), CELL_FONT, styles["body"].fontSize),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#c8ced6")),
                ("LEFTPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return [flowable, Spacer(1, 8)]
