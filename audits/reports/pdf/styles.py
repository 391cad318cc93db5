"""Fonts, paragraph styles and text helpers shared by the renderer's parts.

Text is set in TrueType fonts embedded as subsets, from system packages: DejaVu Sans (and Bold)
for text, DejaVu Sans Mono for digests and signed notes, and Droid Sans Fallback for the
characters DejaVu lacks (Han, kana, Hangul), chosen per character. Right-to-left scripts are
not reordered or shaped: reportlab does that only with rlbidi and uharfbuzz, neither in the lock,
so Arabic and Hebrew print as isolated letters in their stored (logical) order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from audits.reports.pdf.document import ReportPdfError

SANS = "ReportSans"
SANS_BOLD = "ReportSans-Bold"
MONO = "ReportMono"
_CJK = "ReportCJK"
_CJK_MORE = "ReportCJK2"
CELL_FONT = SANS
CELL_FONT_SIZE = 8
DIGEST_FONT_SIZE = 6.5

_DEJAVU = ("/usr/share/fonts/truetype/dejavu", "fonts-dejavu-core")
_DROID = "fonts-droid-fallback"
_FONT_FILES = {
    SANS: (f"{_DEJAVU[0]}/DejaVuSans.ttf", _DEJAVU[1]),
    SANS_BOLD: (f"{_DEJAVU[0]}/DejaVuSans-Bold.ttf", _DEJAVU[1]),
    MONO: (f"{_DEJAVU[0]}/DejaVuSansMono.ttf", _DEJAVU[1]),
    # The Full file has CJK extension A; the other one has the Hangul syllables the Full one lacks.
    _CJK: ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", _DROID),
    _CJK_MORE: ("/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf", _DROID),
}
_FALLBACKS = (_CJK, _CJK_MORE)
_RED = colors.HexColor("#b00020")


@dataclass(frozen=True)
class _Coverage:
    """The characters each registered font has a glyph for."""

    chars: dict[str, frozenset[str]]


@functools.cache
def register_fonts() -> _Coverage:
    """Register the report fonts with reportlab, once per process. Raises ``ReportPdfError``
    naming the file and the package when a font file is missing."""
    chars: dict[str, frozenset[str]] = {}
    for name, (path, package) in _FONT_FILES.items():
        if not Path(path).is_file():
            raise ReportPdfError(
                f"the report font {path} is missing: install the system package {package} (bin/system-packages)"
            )
        font = TTFont(name, path)
        if name == _CJK_MORE:
            # reportlab registers one font per face name, and both Droid files name the same face.
            font.face.name = b"DroidSansFallback-Hangul"
        pdfmetrics.registerFont(font)
        chars[name] = frozenset(map(chr, font.face.charToGlyph))
    pdfmetrics.registerFontFamily(SANS, normal=SANS, bold=SANS_BOLD, italic=SANS, boldItalic=SANS_BOLD)
    pdfmetrics.registerFontFamily(MONO, normal=MONO, bold=MONO, italic=MONO, boldItalic=MONO)
    return _Coverage(chars)


def covered(text: str, font: str) -> bool:
    """Whether ``font`` has a glyph for every character of ``text`` (spaces and line breaks aside)."""
    return register_fonts().chars[font].issuperset(text.replace("\n", ""))


def font_of(char: str, font: str) -> str:
    """The font a character is drawn in: ``font`` where it has the glyph, else the first fallback
    that has it, else ``font`` (a missing-glyph box, not a wrong letter)."""
    chars = register_fonts().chars
    if char in chars[font] or char in "\n\r\t":
        return font
    return next((fallback for fallback in _FALLBACKS if char in chars[fallback]), font)


def runs(text: str, font: str) -> Iterator[tuple[str, str]]:
    """``text`` cut into runs of one font each: (font, text)."""
    if covered(text, font):
        if text:
            yield font, text
        return
    start, current = 0, font_of(text[0], font) if text else font
    for index, char in enumerate(text):
        chosen = font_of(char, font) if not char.isspace() else current
        if chosen != current:
            if index > start:
                yield current, text[start:index]
            start, current = index, chosen
    if start < len(text):
        yield current, text[start:]


def text_width(text: str, font: str, size: float) -> float:
    return sum(stringWidth(part, name, size) for name, part in runs(text, font))


def draw_text(canvas: Canvas, x: float, y: float, text: str, font: str, size: float) -> float:
    """Draw ``text`` from (x, y), each character in a font that has it; returns the width drawn."""
    start = x
    for name, part in runs(text, font):
        canvas.setFont(name, size)
        canvas.drawString(x, y, part)
        x += stringWidth(part, name, size)
    return x - start


def report_styles() -> dict[str, ParagraphStyle]:
    register_fonts()
    base = getSampleStyleSheet()
    body = ParagraphStyle("ReportBody", parent=base["BodyText"], fontName=SANS, fontSize=9.5, leading=12.5)
    return {
        "title": ParagraphStyle("ReportTitle", parent=base["Title"], fontName=SANS_BOLD, fontSize=20, leading=24),
        "h1": ParagraphStyle("ReportH1", parent=base["Heading2"], fontName=SANS_BOLD, spaceBefore=10),
        "h2": ParagraphStyle("ReportH2", parent=base["Heading4"], fontName=SANS_BOLD, spaceBefore=6),
        "body": body,
        "draft": ParagraphStyle(
            "ReportDraft",
            parent=body,
            fontName=SANS_BOLD,
            textColor=_RED,
            borderColor=_RED,
            borderWidth=1,
            borderPadding=5,
            spaceBefore=6,
            spaceAfter=10,
        ),
        "cell": ParagraphStyle(
            "ReportCell", parent=body, fontName=CELL_FONT, fontSize=CELL_FONT_SIZE, leading=CELL_FONT_SIZE + 2
        ),
        "head": ParagraphStyle(
            "ReportHead", parent=body, fontName=SANS_BOLD, fontSize=CELL_FONT_SIZE, leading=CELL_FONT_SIZE + 2
        ),
        "key": ParagraphStyle("ReportKey", parent=body, fontName=SANS_BOLD),
        "digest": ParagraphStyle("ReportDigest", parent=body, fontName=MONO, fontSize=DIGEST_FONT_SIZE, leading=9),
        # Signed notes hold long base64 words: CJK wrapping breaks them anywhere.
        "mono": ParagraphStyle("ReportMono", parent=body, fontName=MONO, fontSize=7, leading=9.5, wordWrap="CJK"),
    }


def markup(text: object, font: str = SANS) -> str:
    """Plain text as reportlab paragraph markup: nothing in it is taken as a tag or an entity, and
    characters ``font`` lacks are set in a fallback font."""
    parts = []
    for name, part in runs(str(text), font):
        escaped = escape(part).replace("\n", "<br/>")
        parts.append(escaped if name == font else f'<font face="{name}">{escaped}</font>')
    return "".join(parts)


def text_of(value: object) -> str:
    return "" if value is None else str(value)
