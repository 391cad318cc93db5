"""The PDF layer of compliance reports: rendering, PAdES signing, reading back and verifying.

Pure tests: no database. Page text is read back with poppler's ``pdftotext`` (skipped where it
is not installed, failed under ``make test``); the layout itself (scripts, widths, landscape pages,
digests, the draft marking) is tested in test_layout.py.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from audits.ledger.keys import SignerKey
from audits.ledger.notes import Checkpoint, sign
from audits.reports.pdf import (
    CERTIFICATE_NOT_VALID,
    MODIFIED_AFTER_SIGNING,
    NO_SIGNATURE,
    SIGNATURE_INVALID,
    UNREADABLE,
    UNTRUSTED_SIGNER,
    VERIFY_COMMAND,
    BarChart,
    Heading,
    KeyValues,
    LineChart,
    Paragraph,
    Report,
    ReportPdfError,
    Table,
    build_pdf,
    read_pdf,
    service_certificate,
    sign_pdf,
    verify_pdf_signature,
)
from conftest import require_tool

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ORIGIN = "reports.test/ledger"
TREE_SIZE = 1000
ROOT = hashlib.sha256(b"root").digest()
GENERATED_AT = datetime(2025, 4, 1, 9, 30, tzinfo=UTC)
SIGNED_AT = datetime(2025, 4, 1, 9, 31, tzinfo=UTC)
LONG_HASH = hashlib.sha512(b"long").hexdigest() + hashlib.sha512(b"longer").hexdigest()  # 256 characters, no space


@pytest.fixture(scope="module")
def ledger_key() -> SignerKey:
    return SignerKey.generate(ORIGIN)


@pytest.fixture(scope="module")
def checkpoint_text(ledger_key: SignerKey) -> str:
    return sign(Checkpoint(origin=ORIGIN, size=TREE_SIZE, root=ROOT), [ledger_key])


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    """Reports are signed with an ECDSA P-256 key (the ledger's Ed25519 key signs checkpoints)."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def certificate(signing_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return _certificate(signing_key)


def _certificate(key: ec.EllipticCurvePrivateKey, *, valid_to: datetime | None = None) -> x509.Certificate:
    return service_certificate(
        key,
        common_name="llmops-governance reports",
        valid_from=datetime(2025, 1, 1, tzinfo=UTC),
        valid_to=valid_to or datetime(2125, 1, 1, tzinfo=UTC),
    )


def _report(checkpoint_text: str, *, rows: int = 300) -> Report:
    table_rows = [
        [f"2025-02-{i % 28 + 1:02d}", f"user-{i}", "approval_request_decide" if i % 7 else "deployment_promote", i]
        for i in range(rows)
    ]
    table_rows[5][2] = LONG_HASH
    return Report(
        title="EU AI Act quarterly evidence",
        scope="all production models",
        period_start=date(2025, 1, 1),
        period_end=date(2025, 3, 31),
        generated_at=GENERATED_AT,
        checkpoint_text=checkpoint_text,
        kind="eu-ai-act",
        report_id="rep-2025-q1",
        sections=[
            Heading("Summary"),
            Paragraph("Every approval in the period, with the ledger entry that records it."),
            KeyValues([("Approvals", 300), ("Rejections", 12), ("Model count", "4")]),
            BarChart("Decisions per month", ["Jan", "Feb", "Mar"], {"approved": [90, 110, 100], "rejected": [4, 5, 3]}),
            LineChart(
                "Open requests per day",
                [f"2025-03-{d:02d}" for d in range(1, 31)],
                {"open": [float(d % 9) for d in range(30)], "overdue": [float(d % 4) for d in range(30)]},
            ),
            Heading("Approvals"),
            Table(["date", "actor", "action", "amount"], table_rows, citations=[3 * i for i in range(rows)]),
        ],
    )


@pytest.fixture(scope="module")
def report(checkpoint_text: str) -> Report:
    return _report(checkpoint_text)


@pytest.fixture(scope="module")
def pdf(report: Report) -> bytes:
    return build_pdf(report)


@pytest.fixture(scope="module")
def signed(pdf: bytes, signing_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> bytes:
    return sign_pdf(
        pdf,
        private_key=signing_key,
        certificate=certificate,
        reason="EU AI Act quarterly evidence",
        signed_at=SIGNED_AT,
    )


# ------------------------------------------------------------------------------------------------
# Reading text back with poppler's pdftotext: the embedded TrueType subsets write glyph codes, not
# literal text, into the content streams; pdftotext maps them back through each font's ToUnicode.


def _pages(pdf: bytes) -> list[list[str]]:
    """Each page's text lines, in reading order (pdftotext without -layout)."""
    require_tool(shutil.which("pdftotext") is not None, "poppler-utils (pdftotext)")
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=True)
    pages = result.stdout.decode().split("\f")[:-1]
    return [[line for line in page.split("\n") if line.strip()] for page in pages]


def _all_text(pdf: bytes) -> str:
    return "\n".join(line for page in _pages(pdf) for line in page)


# ------------------------------------------------------------------------------------------------
# Rendering


def test_build_pdf_renders_every_section_and_a_table_over_many_pages(pdf: bytes, report: Report) -> None:
    reader = PdfFileReader(io.BytesIO(pdf))
    pages = _pages(pdf)
    assert pdf.startswith(b"%PDF-")
    assert len(pages) == int(reader.root["/Pages"]["/Count"]) >= 5

    # Every page has its footer, and the total is the real page count.
    for number, lines in enumerate(pages, start=1):
        assert f"page {number} of {len(pages)}" in lines

    text = _all_text(pdf)
    # The cover: scope, period, the checkpoint's origin, size and root, the signed note, the hint.
    cover = " ".join(" ".join(pages[0]).split())  # a wrapped line's break reads as a space
    for expected in (
        "EU AI Act quarterly evidence",
        "all production models",
        "2025-01-01 to 2025-03-31",
        "2025-04-01 09:30:00 UTC",
        ORIGIN,
        f"{TREE_SIZE} entries",
        ROOT.hex(),
        f"\u2014 {ORIGIN} ",
        VERIFY_COMMAND,
    ):
        assert expected in cover, expected
    # Sections: heading, paragraph, key/values, chart titles and legends, every table row.
    for expected in ("Summary", "Every approval in the period", "Rejections", "Decisions per month", "rejected"):
        assert expected in text, expected
    assert "Open requests per day" in text and "overdue" in text
    for i in (0, 1, 150, 299):
        assert f"user-{i}" in text
    assert "897" in text  # the last row's ledger index
    # The header row repeats on every page the table runs over.
    table_pages = [lines for lines in pages if any(line.startswith("user-") for line in lines)]
    assert len(table_pages) >= 3
    assert all(any(line.startswith("ledger #") for line in lines) for lines in table_pages)


def test_long_cell_values_wrap_inside_their_column(pdf: bytes) -> None:
    text = _all_text(pdf)
    assert LONG_HASH not in text.split("\n")  # not drawn on one line, running off the page
    pieces = [line for line in text.split("\n") if len(line) > 8 and line in LONG_HASH]
    assert len(pieces) >= 2
    # pdftotext's reading order need not follow the lines of one cell: put them back in order.
    assert "".join(sorted(pieces, key=LONG_HASH.index)) == LONG_HASH


def test_build_pdf_is_deterministic(report: Report, pdf: bytes) -> None:
    assert build_pdf(report) == pdf
    later = build_pdf(replace(report, generated_at=GENERATED_AT + timedelta(seconds=1)))
    assert later != pdf

    reader = PdfFileReader(io.BytesIO(pdf))
    info = reader.trailer["/Info"]
    assert info["/CreationDate"] == "D:20250401093000+00'00'"
    assert info["/Subject"] == "eu-ai-act report rep-2025-q1"
    # The document ID depends on the report, not on the run.
    other = PdfFileReader(io.BytesIO(later))
    assert reader.trailer["/ID"][0] != other.trailer["/ID"][0]


def test_markup_characters_render_literally(checkpoint_text: str) -> None:
    tricky = "<b>bold?</b> & <i>co</i> &amp; <unclosed"
    report = Report(
        title=f"Title {tricky}",
        scope=f"scope {tricky}",
        period_start=date(2025, 1, 1),
        period_end=date(2025, 1, 31),
        generated_at=GENERATED_AT,
        checkpoint_text=checkpoint_text,
        sections=[
            Heading(f"Heading {tricky}"),
            Paragraph(f"Paragraph {tricky}"),
            KeyValues([(f"key {tricky}", f"value {tricky}")]),
            Table([f"column {tricky}"], [[f"cell {tricky}"], [f"{tricky} " * 12]]),
            BarChart(f"Chart {tricky}", [f"cat {tricky}"], {f"series {tricky}": [1.0]}),
        ],
    )
    text = " ".join(_all_text(build_pdf(report)).split())  # a wrapped line's break reads as a space
    for where in ("Title", "scope", "Heading", "Paragraph", "key", "value", "cell", "Chart", "series"):
        assert f"{where} {tricky}" in text, where
    # reportlab draws a header cell as a Paragraph: escaped, so <b> is text, not a font change.
    assert "column <b>bold?</b>" in text


def test_report_json_carries_the_checkpoint_and_cited_indexes(pdf: bytes, checkpoint_text: str) -> None:
    info = read_pdf(pdf)
    assert info.kind == "eu-ai-act"
    assert info.report_id == "rep-2025-q1"
    assert info.checkpoint_text == checkpoint_text
    assert info.cited_indexes == tuple(3 * i for i in range(300))
    assert info.generated_at == GENERATED_AT
    assert (info.period_start, info.period_end) == ("2025-01-01", "2025-03-31")

    # An ordinary attachment, as a PDF reader lists it.
    reader = PdfFileReader(io.BytesIO(pdf))
    name, filespec = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
    assert name == "report.json"
    assert filespec["/EF"]["/F"]["/Subtype"] == "/application/json"


def test_report_id_defaults_to_a_digest_of_the_content(report: Report) -> None:
    first = read_pdf(build_pdf(replace(report, report_id="", sections=report.sections[:3]))).report_id
    again = read_pdf(build_pdf(replace(report, report_id="", sections=report.sections[:3]))).report_id
    other = read_pdf(build_pdf(replace(report, report_id="", sections=report.sections[:2]))).report_id
    assert first == again != other


def test_a_citation_beyond_the_checkpoint_is_refused(checkpoint_text: str) -> None:
    report = Report(
        title="t",
        scope="s",
        period_start=date(2025, 1, 1),
        period_end=date(2025, 1, 2),
        generated_at=GENERATED_AT,
        checkpoint_text=checkpoint_text,
        sections=[Table(["a"], [["x"]], citations=[TREE_SIZE])],
    )
    with pytest.raises(ReportPdfError, match="beyond the checkpoint"):
        build_pdf(report)


def test_malformed_inputs_are_refused(report: Report) -> None:
    with pytest.raises(ReportPdfError, match="timezone-aware"):
        build_pdf(replace(report, generated_at=datetime(2025, 4, 1)))
    with pytest.raises(ReportPdfError, match="cells for"):
        build_pdf(replace(report, sections=[Table(["a", "b"], [["only one"]])]))
    with pytest.raises(ReportPdfError, match="values for"):
        build_pdf(replace(report, sections=[BarChart("c", ["x", "y"], {"s": [1.0]})]))
    with pytest.raises(ValueError, match="blank line"):
        build_pdf(replace(report, checkpoint_text="not a note"))


# ------------------------------------------------------------------------------------------------
# Signing and verifying


def test_service_certificate_is_deterministic_and_for_signing(signing_key: ec.EllipticCurvePrivateKey) -> None:
    key = signing_key
    first, second = _certificate(key), _certificate(key)
    # ECDSA signatures are randomised: the same key gives the same certificate but for the signature.
    assert first.tbs_certificate_bytes == second.tbs_certificate_bytes
    spki = PublicFormat.SubjectPublicKeyInfo
    assert first.public_key().public_bytes(Encoding.DER, spki) == key.public_key().public_bytes(Encoding.DER, spki)
    usage = first.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    assert first.serial_number != _certificate(ec.generate_private_key(ec.SECP256R1())).serial_number


def test_signed_report_verifies_and_reads_back(signed: bytes, certificate: x509.Certificate) -> None:
    check = verify_pdf_signature(signed, trusted=[certificate])
    assert check.ok, check.reason
    assert check.reason is None
    assert "llmops-governance reports" in (check.signer or "")
    assert check.signed_at == SIGNED_AT
    info = read_pdf(signed)
    assert info.report_id == "rep-2025-q1"
    assert info.cited_indexes[-1] == 897

    reader = PdfFileReader(io.BytesIO(signed))
    (signature,) = reader.embedded_signatures
    assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"


def test_an_unsigned_pdf_has_no_signature(pdf: bytes, certificate: x509.Certificate) -> None:
    check = verify_pdf_signature(pdf, trusted=[certificate])
    assert not check.ok
    assert check.reason == NO_SIGNATURE


def test_a_non_pdf_is_unreadable(certificate: x509.Certificate) -> None:
    check = verify_pdf_signature(b"this is not a PDF", trusted=[certificate])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(UNREADABLE)
    with pytest.raises(ReportPdfError):
        read_pdf(b"this is not a PDF")


def test_a_flipped_byte_in_the_signed_content_fails(signed: bytes, certificate: x509.Certificate) -> None:
    # A byte inside the first page's content stream, well within the signed byte range.
    start = signed.index(b"stream\n", signed.index(b"/Type /Page")) + len(b"stream\n")
    position = start + 40
    tampered = bytearray(signed)
    tampered[position] ^= 0x01
    check = verify_pdf_signature(bytes(tampered), trusted=[certificate])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith((MODIFIED_AFTER_SIGNING, SIGNATURE_INVALID)), check.reason
    assert "modified" in check.reason


def test_a_changed_signature_value_fails(signed: bytes, certificate: x509.Certificate) -> None:
    # The last hex digits of the CMS blob hold the ECDSA signature value.
    contents = signed.index(b"/Contents <") + len(b"/Contents <")
    end = signed.index(b">", contents)
    blob = signed[contents:end].rstrip(b"0")
    position = contents + len(blob) - 4
    tampered = bytearray(signed)
    tampered[position : position + 1] = b"0" if signed[position : position + 1] != b"0" else b"1"
    check = verify_pdf_signature(bytes(tampered), trusted=[certificate])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(SIGNATURE_INVALID), check.reason


def _annotate(signed: bytes) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    page_ref, _ = writer.find_page_for_modification(0)
    page = page_ref.get_object()
    annotation = generic.DictionaryObject(
        {
            generic.NameObject("/Type"): generic.NameObject("/Annot"),
            generic.NameObject("/Subtype"): generic.NameObject("/Text"),
            generic.NameObject("/Rect"): generic.ArrayObject([generic.FloatObject(v) for v in (50, 50, 80, 80)]),
            generic.NameObject("/Contents"): generic.TextStringObject("approved, honest"),
        }
    )
    page[generic.NameObject("/Annots")] = generic.ArrayObject([writer.add_object(annotation)])
    writer.mark_update(page_ref)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _retitle(signed: bytes) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    info_ref = writer.trailer.raw_get("/Info")
    info_ref.get_object()[generic.NameObject("/Title")] = generic.TextStringObject("A different report")
    writer.mark_update(info_ref)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("update", [_annotate, _retitle], ids=["annotation", "info"])
def test_an_incremental_update_after_signing_fails(signed: bytes, certificate: x509.Certificate, update) -> None:
    updated = update(signed)
    assert updated.startswith(signed) and len(updated) > len(signed)  # signed bytes kept, a revision added
    check = verify_pdf_signature(updated, trusted=[certificate])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(MODIFIED_AFTER_SIGNING), check.reason


def test_appended_bytes_after_signing_fail(signed: bytes, certificate: x509.Certificate) -> None:
    check = verify_pdf_signature(signed + b"\n% a trailing comment\n", trusted=[certificate])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(MODIFIED_AFTER_SIGNING), check.reason


def test_a_signer_outside_the_trusted_list_fails(signed: bytes) -> None:
    stranger = _certificate(ec.generate_private_key(ec.SECP256R1()))
    check = verify_pdf_signature(signed, trusted=[stranger])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(UNTRUSTED_SIGNER), check.reason
    assert "certificate" in check.reason
    assert not verify_pdf_signature(signed, trusted=[]).ok


def test_a_certificate_expired_at_verification_time_fails(pdf: bytes, signing_key: ec.EllipticCurvePrivateKey) -> None:
    key = signing_key
    short_lived = _certificate(key, valid_to=datetime(2025, 6, 1, tzinfo=UTC))
    signed = sign_pdf(pdf, private_key=key, certificate=short_lived, reason="r", signed_at=SIGNED_AT)
    assert verify_pdf_signature(signed, trusted=[short_lived], at=datetime(2025, 5, 1, tzinfo=UTC)).ok
    check = verify_pdf_signature(signed, trusted=[short_lived], at=datetime(2026, 1, 1, tzinfo=UTC))
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(CERTIFICATE_NOT_VALID), check.reason
    # Without a time given, the certificate is checked at the signing time the signature claims.
    assert verify_pdf_signature(signed, trusted=[short_lived]).ok
    late = sign_pdf(
        pdf, private_key=key, certificate=short_lived, reason="r", signed_at=datetime(2025, 7, 1, tzinfo=UTC)
    )
    check = verify_pdf_signature(late, trusted=[short_lived])
    assert not check.ok and check.reason is not None
    assert check.reason.startswith(CERTIFICATE_NOT_VALID), check.reason


def test_pdftotext_reads_table_values_and_page_numbers(signed: bytes) -> None:
    require_tool(shutil.which("pdftotext") is not None, "poppler-utils (pdftotext)")
    result = subprocess.run(["pdftotext", "-layout", "-", "-"], input=signed, capture_output=True, check=True)
    text = result.stdout.decode()
    assert "user-299" in text
    assert "page 3 of" in text
    assert "<b>" not in text
