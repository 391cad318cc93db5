"""``build_pdf``: a report rendered with reportlab as a deterministic PDF, a cover page naming the
checkpoint it was built from, its sections, "page X of Y" footers, and ``report.json`` embedded
as the machine-readable side."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
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
from reportlab.platypus import Flowable, PageBreak, SimpleDocTemplate, Spacer
from reportlab.platypus import Paragraph as RLParagraph

from audits.ledger.notes import Checkpoint
from audits.ledger.notes import parse as parse_note
from audits.reports.pdf.charts import chart_flowables
from audits.reports.pdf.document import (
    METADATA_FILENAME,
    PRODUCER,
    VERIFY_COMMAND,
    Attachment,
    BarChart,
    Heading,
    KeyValues,
    LineChart,
    Paragraph,
    Report,
    ReportPdfError,
    Section,
    Table,
    cited_indexes,
    report_metadata,
    utc,
)
from audits.reports.pdf.styles import markup, report_styles
from audits.reports.pdf.tables import LEDGER_COLUMN, key_values_flowables, table_flowables

_PAGE_MARGIN = 18 * mm
_FOOTER_Y = 10 * mm
_PAGE_TOTAL_FORM = "pageTotal"


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


def _section_flowables(
    section: Section, available: float, frame_height: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    if isinstance(section, Heading):
        return [RLParagraph(markup(section.text), styles["h1"])]
    if isinstance(section, Paragraph):
        return [RLParagraph(markup(section.text), styles["body"]), Spacer(1, 4)]
    if isinstance(section, Table):
        return table_flowables(section, available, frame_height, styles)
    if isinstance(section, KeyValues):
        return key_values_flowables(section.pairs, available, styles)
    if isinstance(section, BarChart | LineChart):
        return chart_flowables(section, available, styles)
    raise ReportPdfError(f"unknown section type {type(section).__name__}")


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


class _MimeTypeName(PDFObject):
    """A PDF name holding a MIME type: reportlab's PDFName writes the "/" of "application/json"
    as is, which a reader takes for the start of a second name; here it is written as #2F."""

    def __init__(self, mime_type: str) -> None:
        self.mime_type = mime_type

    def format(self, document: object) -> bytes:
        return b"/" + self.mime_type.replace("/", "#2F").encode("ascii")


def _embedded_file(
    filename: str, payload: bytes, mime_type: str, description: str, generated_at: datetime
) -> PDFDictionary:
    stream = PDFStream(
        PDFDictionary(
            {
                "Type": PDFName("EmbeddedFile"),
                "Subtype": _MimeTypeName(mime_type),
                "Params": PDFDictionary({"Size": len(payload), "ModDate": PDFString(_pdf_date(generated_at))}),
            }
        ),
        payload,
        filters=[PDFZCompress],
    )
    return PDFDictionary(
        {
            "Type": PDFName("Filespec"),
            "F": PDFString(filename),
            "UF": PDFString(filename),
            "Desc": PDFString(description),
            "AFRelationship": PDFName("Data"),
            "EF": PDFDictionary({"F": stream}),
        }
    )


def _embed_files(canvas: Canvas, payload: bytes, attachments: Sequence[Attachment], generated_at: datetime) -> None:
    """``report.json`` and the report's attachments, in the name tree (sorted by name, as PDF asks)."""
    files = {
        METADATA_FILENAME: _embedded_file(
            METADATA_FILENAME, payload, "application/json",
            "machine-readable report metadata: checkpoint, cited ledger indexes and claims", generated_at,
        )
    }  # fmt: skip
    for attachment in attachments:
        if attachment.filename in files:
            raise ReportPdfError(f"two embedded files are named {attachment.filename!r}")
        files[attachment.filename] = _embedded_file(
            attachment.filename, attachment.data, attachment.mime_type, attachment.description, generated_at
        )
    names: list[PDFObject] = []
    for filename in sorted(files):
        names += [PDFString(filename), files[filename]]
    canvas.setCatalogEntry("Names", PDFDictionary({"EmbeddedFiles": PDFDictionary({"Names": PDFArray(names)})}))


def build_pdf(report: Report) -> bytes:
    """Render ``report`` as a PDF: a cover page naming the checkpoint it was built from, then its
    sections. The same report gives the same bytes. Raises ``ReportPdfError`` for a malformed
    report and ``NoteError`` (also a ``ValueError``) for a checkpoint that is not a signed note."""
    generated_at = utc(report.generated_at, "generated_at")
    checkpoint, _ = parse_note(report.checkpoint_text)
    cited = cited_indexes(report)
    if cited and cited[-1] >= checkpoint.size:
        raise ReportPdfError(
            f"the report cites ledger entry {cited[-1]}, beyond the checkpoint's tree size {checkpoint.size}"
        )
    report_id = report.report_id or _default_id(report)
    metadata = report_metadata(report, report_id, cited, generated_at)
    payload = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    styles = report_styles()

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
        _embed_files(canvas, payload, report.attachments, generated_at)
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
        RLParagraph(markup(report.title), styles["title"]),
        Spacer(1, 6),
    ]
    story += key_values_flowables(
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
    story += key_values_flowables(
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
    story.append(RLParagraph(markup(report.checkpoint_text.rstrip("\n")), styles["mono"]))
    story.append(RLParagraph("How to verify", styles["h1"]))
    story.append(
        RLParagraph(
            markup(
                "This PDF is signed (PAdES) by the service. To check the signature, that nothing was "
                f"changed after signing, and the checkpoint above against the ledger's keys, run: {VERIFY_COMMAND}. "
                f'Rows with a "{LEDGER_COLUMN}" cite ledger entries by index; each lies inside the checkpoint '
                "and can be proven against it with an inclusion proof. The checkpoint and the cited indexes "
                f"are also embedded, machine-readable, as the attachment {METADATA_FILENAME}."
            ),
            styles["body"],
        )
    )
    story.append(PageBreak())
    return story
