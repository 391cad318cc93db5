"""``build_pdf``: a report rendered with reportlab as a deterministic PDF, a cover page naming the
checkpoint it was built from, its sections (a table too wide for a portrait page on landscape
pages), "page X of Y" footers, an appendix of the digests too long for their table column, and
``report.json`` embedded as the machine-readable side. A draft report (``Report.draft_notice``)
says so on every page, in red above the text, and its cover names what is missing."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from llmops_ledger_verify.receipt import parse_receipt
from llmops_ledger_verify.replay import VerificationFailed
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
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
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, NextPageTemplate, PageBreak, PageTemplate, Spacer
from reportlab.platypus import Paragraph as RLParagraph

from audits.ledger.notes import Checkpoint
from audits.ledger.notes import parse as parse_note
from audits.reports.pdf.charts import chart_flowables
from audits.reports.pdf.document import (
    METADATA_FILENAME,
    PRODUCER,
    RECEIPT_MIME_TYPE,
    RECEIPTS_LIMIT,
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
    receipt_filename,
    report_metadata,
    utc,
)
from audits.reports.pdf.styles import SANS, SANS_BOLD, draw_text, markup, report_styles, text_width
from audits.reports.pdf.tables import (
    LEDGER_COLUMN,
    DigestIndex,
    Frames,
    Orientation,
    key_values_flowables,
    table_flowables,
)

_PAGE_MARGIN = 18 * mm
_FOOTER_Y = 10 * mm
_HEADER_FROM_TOP = 11 * mm
_PAGE_TOTAL_FORM = "pageTotal"
_FOOTER_SIZE = 7.5
_FOOTER_GREY = colors.HexColor("#555555")
DRAFT_MARK = "DRAFT - incomplete"
_DRAFT_RED = colors.HexColor("#b00020")


def _pdf_date(moment: datetime) -> str:
    return moment.strftime("D:%Y%m%d%H%M%S+00'00'")


class _ReportCanvas(Canvas):
    """Writes "page X of Y" on every page: the Y is a form XObject drawn on each page and defined
    once, at save time, when the page count is known. One pass, no page state kept in memory.
    A draft's pages also carry a red "DRAFT - incomplete" line above the text."""

    footer_left = ""
    draft = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Not Helvetica, reportlab's default: the page would name a font it does not embed.
        kwargs["initialFontName"] = SANS
        super().__init__(*args, **kwargs)

    def draw_footer(self) -> None:
        width, height = self._pagesize
        self.saveState()
        self.setFillColor(_FOOTER_GREY)
        draw_text(self, _PAGE_MARGIN, _FOOTER_Y, self.footer_left, SANS, _FOOTER_SIZE)
        label = f"page {self.getPageNumber()} of "
        x = width - _PAGE_MARGIN - 70
        drawn = draw_text(self, x, _FOOTER_Y, label, SANS, _FOOTER_SIZE)
        self.translate(x + drawn, _FOOTER_Y)
        self.doForm(_PAGE_TOTAL_FORM)
        self.restoreState()
        if self.draft:
            self.saveState()
            self.setFillColor(_DRAFT_RED)
            self.setStrokeColor(_DRAFT_RED)
            y = height - _HEADER_FROM_TOP
            drawn = draw_text(self, _PAGE_MARGIN, y, DRAFT_MARK, SANS_BOLD, 10)
            self.setLineWidth(1.2)
            self.line(_PAGE_MARGIN + drawn + 6, y + 3.5, width - _PAGE_MARGIN, y + 3.5)
            self.restoreState()

    def save(self) -> None:
        if len(self._code):
            self.showPage()
        pages = self.getPageNumber() - 1
        self.beginForm(_PAGE_TOTAL_FORM)
        self.setFillColor(_FOOTER_GREY)
        draw_text(self, 0, 0, str(pages), SANS, _FOOTER_SIZE)
        self.endForm()
        super().save()


def _section_flowables(
    section: Section, frames: Frames, styles: dict[str, ParagraphStyle], digests: DigestIndex
) -> tuple[Orientation | None, list[Flowable]]:
    """A section's flowables and the orientation of the pages they are laid out for (None for a
    heading or a paragraph: it goes with what follows)."""
    available = frames.portrait[0]
    if isinstance(section, Heading):
        return None, [RLParagraph(markup(section.text), styles["h1"])]
    if isinstance(section, Paragraph):
        return None, [RLParagraph(markup(section.text), styles["body"]), Spacer(1, 4)]
    if isinstance(section, Table):
        return table_flowables(section, frames, styles, digests)
    if isinstance(section, KeyValues):
        return "portrait", key_values_flowables(section.pairs, available, styles, digests)
    if isinstance(section, BarChart | LineChart):
        return "portrait", chart_flowables(section, available, styles)
    raise ReportPdfError(f"unknown section type {type(section).__name__}")


def _orient(laid_out: list[tuple[Orientation | None, list[Flowable]]]) -> list[Flowable]:
    """The sections' flowables with a switch of page template wherever the orientation changes:
    headings and paragraphs go with the section they introduce. The story so far (the cover)
    ends with a page break."""
    orientations: list[Orientation | None] = [orientation for orientation, _ in laid_out]
    following: Orientation | None = None
    for index in reversed(range(len(laid_out))):
        if orientations[index] is None:
            orientations[index] = following
        following = orientations[index]
    story: list[Flowable] = []
    current: Orientation = "portrait"
    for index, (_, flowables) in enumerate(laid_out):
        wanted = orientations[index] or current
        if wanted != current:
            story += [NextPageTemplate(wanted), PageBreak()]
            current = wanted
        story += flowables
    if current != "portrait":
        story += [NextPageTemplate("portrait"), PageBreak()]
    return story


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


def _receipt_attachments(report: Report, checkpoint: Checkpoint, cited: tuple[int, ...]) -> list[Attachment]:
    """The report's receipts as attachments, each checked to be a receipt of its cited entry in
    the report's own checkpoint (its signature is the ledger's to check, ``verify_receipt``)."""
    if len(report.receipts) > RECEIPTS_LIMIT:
        raise ReportPdfError(f"{len(report.receipts)} receipts: a report embeds at most {RECEIPTS_LIMIT}")
    attachments = []
    for index in sorted(report.receipts):
        if index not in cited:
            raise ReportPdfError(f"a receipt of ledger entry {index}, which the report does not cite")
        try:
            receipt = parse_receipt(report.receipts[index])
        except VerificationFailed as exc:
            raise ReportPdfError(f"the receipt of ledger entry {index} is malformed: {exc}") from None
        if (receipt.index, receipt.tree_size, receipt.checkpoint) != (index, checkpoint.size, report.checkpoint_text):
            raise ReportPdfError(
                f"the receipt given for ledger entry {index} proves entry {receipt.index} in a tree of size "
                f"{receipt.tree_size}, not in the report's checkpoint (size {checkpoint.size})"
            )
        description = (
            f"SCITT receipt (RFC 9942 COSE_Sign1, RFC9162_SHA256) of ledger entry {index} "
            f"in the checkpoint of tree size {checkpoint.size}"
        )
        attachments.append(Attachment(receipt_filename(index), report.receipts[index], RECEIPT_MIME_TYPE, description))
    return attachments


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
    attachments = [*report.attachments, *_receipt_attachments(report, checkpoint, cited)]
    report_id = report.report_id or _default_id(report)
    metadata = report_metadata(report, report_id, cited, generated_at)
    payload = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    styles = report_styles()

    buffer = io.BytesIO()
    doc = BaseDocTemplate(
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
    footer = f"{report.title} \u00b7 {report.kind} {report_id}"
    if text_width(footer, SANS, _FOOTER_SIZE) > available - 90:
        footer = f"{report.kind} {report_id}"

    def on_page(canvas: Canvas, _doc: object) -> None:
        report_canvas = cast(_ReportCanvas, canvas)
        if canvas.getPageNumber() == 1:
            canvas.setDateFormatter(lambda *_: _pdf_date(generated_at))
            _embed_files(canvas, payload, attachments, generated_at)
        report_canvas.footer_left = footer
        report_canvas.draft = bool(report.draft_notice)
        report_canvas.draw_footer()

    templates = []
    for name, pagesize in (("portrait", A4), ("landscape", landscape(A4))):
        width, height = pagesize[0] - 2 * _PAGE_MARGIN, pagesize[1] - 2 * _PAGE_MARGIN
        frame = Frame(_PAGE_MARGIN, _PAGE_MARGIN, width, height, id=name)
        templates.append(PageTemplate(id=name, frames=[frame], onPage=on_page, pagesize=pagesize))
    doc.addPageTemplates(templates)
    landscape_size = landscape(A4)
    frames = Frames(
        portrait=(doc.width, doc.height),
        landscape=(landscape_size[0] - 2 * _PAGE_MARGIN, landscape_size[1] - 2 * _PAGE_MARGIN),
    )

    digests = DigestIndex()
    head, proof = _cover(report, report_id, generated_at, checkpoint, available, styles, digests)
    laid_out = _orient([_section_flowables(section, frames, styles, digests) for section in report.sections])
    if report.proof_last:
        # A letter to a person: the title and the letter first, how to check it at the end.
        ends_page = bool(laid_out) and isinstance(laid_out[-1], PageBreak)  # back from landscape
        story: list[Flowable] = [*head, *laid_out, *([] if ends_page else [PageBreak()]),
                                 RLParagraph("About this document", styles["h1"]), *proof]  # fmt: skip
    else:
        story = [*head, *proof, PageBreak(), *laid_out]
    story += digests.appendix(available, styles)
    doc.build(story, canvasmaker=_ReportCanvas)
    return buffer.getvalue()


def _cover(
    report: Report,
    report_id: str,
    generated_at: datetime,
    checkpoint: Checkpoint,
    available: float,
    styles: dict[str, ParagraphStyle],
    digests: DigestIndex,
) -> tuple[list[Flowable], list[Flowable]]:
    """The cover in two parts: the title (with the draft notice) and the proof: scope, period,
    the checkpoint the report is built from and how to verify it."""
    root_b64 = checkpoint.body().split("\n")[2]
    head: list[Flowable] = [
        RLParagraph(markup(report.title), styles["title"]),
        Spacer(1, 6),
    ]
    if report.draft_notice:
        notice = f"{DRAFT_MARK}: {report.draft_notice}"
        head.append(RLParagraph(markup(notice), styles["draft"]))
    story: list[Flowable] = key_values_flowables(
        [
            ("Scope", report.scope),
            ("Period", f"{report.period_start.isoformat()} to {report.period_end.isoformat()}"),
            ("Generated", generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("Report", f"{report.kind} {report_id}"),
        ],
        available,
        styles,
        digests,
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
        digests,
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
                + _receipts_sentence(report)
            ),
            styles["body"],
        )
    )
    return head, story


def _receipts_sentence(report: Report) -> str:
    if not report.receipts:
        return ""
    count = len(report.receipts)
    which = "every cited entry" if count == len(cited_indexes(report)) else f"{count} of the cited entries"
    return (
        f" SCITT receipts (RFC 9942 COSE receipts) of {which}, in the checkpoint above, are embedded as "
        "ledger-receipt-<index>.cose: each proves its entry to anyone holding the entry's bytes and the "
        "ledger's public key, without this service."
    )
