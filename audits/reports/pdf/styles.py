"""Paragraph styles and text helpers shared by the renderer's parts. Text is set in the PDF
standard fonts (Helvetica, Courier)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

CELL_FONT = "Helvetica"
CELL_FONT_SIZE = 8


def report_styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("ReportBody", parent=base["BodyText"], fontName="Helvetica", fontSize=9.5, leading=12.5)
    return {
        "title": ParagraphStyle("ReportTitle", parent=base["Title"], fontName="Helvetica-Bold", fontSize=20),
        "h1": ParagraphStyle("ReportH1", parent=base["Heading2"], fontName="Helvetica-Bold", spaceBefore=10),
        "h2": ParagraphStyle("ReportH2", parent=base["Heading4"], fontName="Helvetica-Bold", spaceBefore=6),
        "body": body,
        "cell": ParagraphStyle(
            "ReportCell", parent=body, fontName=CELL_FONT, fontSize=CELL_FONT_SIZE, leading=CELL_FONT_SIZE + 2
        ),
        "head": ParagraphStyle(
            "ReportHead", parent=body, fontName="Helvetica-Bold", fontSize=CELL_FONT_SIZE, leading=CELL_FONT_SIZE + 2
        ),
        "key": ParagraphStyle("ReportKey", parent=body, fontName="Helvetica-Bold"),
        # Signed notes hold long base64 words: CJK wrapping breaks them anywhere.
        "mono": ParagraphStyle(
            "ReportMono", parent=body, fontName="Courier", fontSize=7.5, leading=9.5, wordWrap="CJK"
        ),
    }


def markup(text: object) -> str:
    """Plain text as reportlab paragraph markup: nothing in it is taken as a tag or an entity."""
    return escape(str(text)).replace("\n", "<br/>")


def text_of(value: object) -> str:
    return "" if value is None else str(value)
