"""The report PDF's layout, read back with poppler (pdftotext, pdffonts, pdfinfo, pdftoppm): names
in many scripts print whole, table words never split (wide tables on landscape pages, too-wide
ones as cards), every font embedded, digests whole or in the appendix, a draft marked on every
page. Pure tests: no database.

Every page of the rich report is also rendered to PNG under var/test-artifacts/reports-layout/
(git-ignored), for a person to look at.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from audits.ledger.keys import SignerKey
from audits.ledger.notes import Checkpoint, sign
from audits.reports.pdf import BarChart, Digest, Heading, KeyValues, Paragraph, Report, Table, build_pdf
from conftest import require_tool

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "reports-layout"
ORIGIN = "layout.test/ledger"
DRAFT = "DRAFT - incomplete"

# Left-to-right scripts. Arabic and Hebrew are left out: reportlab reorders and shapes them only
# with rlbidi and uharfbuzz, which are not in the lock (see audits/reports/pdf/styles.py).
NAMES = {
    "Polish": "Łukasz Żółć",
    "Greek": "Αλέξανδρος Παπαδόπουλος",
    "Cyrillic": "Юлия Иванова",
    "Armenian": "Արամ Սարգսյան",
    "Georgian": "გიორგი ბერიძე",
    "Chinese": "张伟",
    "Japanese": "さくら",
    "Korean": "김민준",
    "Indonesian": "Siti Nurhaliza",
}
# Thirteen columns (the ledger's included) whose longest words fit a landscape page, not a portrait one.
WIDE_COLUMNS = [
    "dataset", "purpose", "lawful basis", "data subjects", "PII found", "also found", "evidence", "recipients",
    "transfers", "retention", "steward", "records", "status",
]  # fmt: skip
WIDE_ROW = [
    "support-tickets", "support assistant fine-tuning", "legitimate_interests", "customers", "PHONE_NUMBER",
    "EMAIL_ADDRESS", "dataset_version.use_for_training", "hosting provider", "US: SCC", "365 days", "data-steward",
    "1,000", "approved",
]  # fmt: skip
CARD_COLUMNS = [f"processing_attribute_{i}" for i in range(24)]
DIGEST = hashlib.sha256(b"model weights").hexdigest()
CROWDED_COLUMNS = ["dataset", "owner", "purpose of the processing", "lawful basis", "recipients", "digest"]
CROWDED_ROW = ["support-tickets", "data-steward", "support assistant", "legitimate_interests", "hosting"]
CROWDED_DIGEST = "sha256:" + hashlib.sha256(b"training data").hexdigest()


@pytest.fixture(scope="module")
def checkpoint_text() -> str:
    key = SignerKey.generate(ORIGIN)
    return sign(Checkpoint(origin=ORIGIN, size=100, root=hashlib.sha256(b"root").digest()), [key])


def _report(checkpoint_text: str, **changes: object) -> Report:
    report = Report(
        title="Records of processing \u00b7 Łódź \u00b7 东京",
        scope="all projects",
        period_start=date(2025, 1, 1),
        period_end=date(2025, 3, 31),
        generated_at=datetime(2025, 4, 1, 9, 30, tzinfo=UTC),
        checkpoint_text=checkpoint_text,
        kind="records_of_processing",
        report_id="layout-1",
        draft_notice="the lawful basis of dataset support-tickets is not recorded",
        sections=[
            Heading("Data subjects"),
            Paragraph("Names in the scripts the service's users write them in."),
            Table(["script", "name"], [[script, name] for script, name in NAMES.items()], citations=list(range(9))),
            BarChart("Requests per person", [NAMES["Polish"], NAMES["Chinese"], NAMES["Korean"]], {"open": [1, 2, 3]}),
            Heading("Processing activities"),
            Paragraph("Thirteen columns: too wide for a portrait page."),
            Table(WIDE_COLUMNS, [WIDE_ROW] * 60, citations=list(range(60))),
            Heading("Artefacts"),
            KeyValues([("Model digest", Digest(DIGEST))]),
            Table(["artefact", "digest"], [["model", Digest(DIGEST)], ["adapter", DIGEST]]),
            Table(CROWDED_COLUMNS, [[*CROWDED_ROW, Digest(CROWDED_DIGEST)]]),
            Heading("Attributes"),
            Table(CARD_COLUMNS, [[f"value_{i}_of_row_{row}" for i in range(24)] for row in range(3)]),
        ],
    )
    return replace(report, **changes)


@pytest.fixture(scope="module")
def pdf(checkpoint_text: str) -> bytes:
    return build_pdf(_report(checkpoint_text))


@pytest.fixture(scope="module")
def pages(pdf: bytes) -> list[str]:
    """Each page's text (pdftotext, reading order)."""
    require_tool(shutil.which("pdftotext") is not None, "poppler-utils (pdftotext)")
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=True)
    return result.stdout.decode().split("\f")[:-1]


def _page_sizes(pdf: bytes, tmp_path: Path) -> list[tuple[float, float]]:
    require_tool(shutil.which("pdfinfo") is not None, "poppler-utils (pdfinfo)")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "999", str(path)], capture_output=True, check=True, text=True)
    return [(float(w), float(h)) for w, h in re.findall(r"Page +\d+ size: +([\d.]+) x ([\d.]+)", info.stdout)]


def test_names_in_every_script_print_whole(pages: list[str]) -> None:
    text = "\n".join(pages)
    for script, name in NAMES.items():
        assert name in text, script
    # The chart's labels and the title too, each character in a font that has it.
    assert "Records of processing \u00b7 Łódź \u00b7 东京" in text
    chart_page = next(page for page in pages if "Requests per person" in page)
    for name in (NAMES["Polish"], NAMES["Chinese"], NAMES["Korean"]):
        assert chart_page.count(name) >= 2, name  # the table's cell and the chart's label


def test_a_wide_table_keeps_every_word_whole_on_landscape_pages(pdf: bytes, pages: list[str], tmp_path: Path) -> None:
    sizes = _page_sizes(pdf, tmp_path)
    assert len(sizes) == len(pages)
    wide = [number for number, page in enumerate(pages) if "support-tickets" in page and "also found" in page]
    assert len(wide) >= 2  # 60 rows run over pages, the header repeated on each
    for number in wide:
        width, height = sizes[number]
        assert width > height, f"page {number + 1} is not landscape"
        words = set(pages[number].split())
        expected = {word for cell in WIDE_COLUMNS + WIDE_ROW for word in cell.split()}
        assert expected <= words, expected - words
    # The pages before and after are portrait again.
    assert sizes[0][0] < sizes[0][1] and sizes[wide[-1] + 1][0] < sizes[wide[-1] + 1][1]


def test_a_table_too_wide_for_landscape_becomes_cards(pages: list[str]) -> None:
    text = "\n".join(pages)
    words = set(text.split())
    for row in range(3):
        for i in range(24):
            assert f"value_{i}_of_row_{row}" in words
    assert set(CARD_COLUMNS) <= words
    # One card per row: every column's name is printed once per row.
    assert text.count("processing_attribute_23") == 3


def test_every_font_is_embedded(pdf: bytes, tmp_path: Path) -> None:
    require_tool(shutil.which("pdffonts") is not None, "poppler-utils (pdffonts)")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    listing = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True).stdout
    fonts = listing.splitlines()[2:]
    names = {line.split()[0].split("+")[-1] for line in fonts}
    assert {"DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DroidSansFallback"} <= names, names
    for line in fonts:
        # name, type ("TrueType"), encoding, then emb sub uni
        emb, sub, uni = line.split()[-5:-2]
        assert (emb, sub, uni) == ("yes", "yes", "yes"), line


def test_digests_print_whole_or_in_the_appendix(pages: list[str]) -> None:
    text = "\n".join(pages)
    # A digest column with room: the digest in full, on one line (pdftotext reads it as one word).
    assert text.split().count(DIGEST) >= 3  # the key-value list, a Digest cell, a plain 64-hex cell
    # A crowded table: a prefix and a reference; the appendix at the end lists it in full, once.
    assert f"{CROWDED_DIGEST[:19]}\u2026 [D1]" in text
    appendix = pages[-1]
    assert "Digests" in appendix and CROWDED_DIGEST in appendix.split()
    assert text.count(CROWDED_DIGEST) == 1


def test_a_draft_is_marked_on_every_page_and_says_what_is_missing(pages: list[str], checkpoint_text: str) -> None:
    assert len(pages) >= 6
    for number, page in enumerate(pages, start=1):
        assert DRAFT in page, f"page {number}"
    cover = " ".join(pages[0].split())
    assert f"{DRAFT}: the lawful basis of dataset support-tickets is not recorded" in cover

    complete = build_pdf(_report(checkpoint_text, draft_notice="", sections=[Heading("Summary")]))
    text = subprocess.run(["pdftotext", "-", "-"], input=complete, capture_output=True, check=True).stdout.decode()
    assert len(text.split("\f")) >= 3 and "DRAFT" not in text


def test_every_page_renders_to_png(pdf: bytes, pages: list[str]) -> None:
    """The pages as pictures, kept for a person to look at (fonts, landscape, no overflow, the
    draft banner); here: one PNG per page, each a page of the right shape."""
    require_tool(shutil.which("pdftoppm") is not None, "poppler-utils (pdftoppm)")
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("page-*.png"):
        old.unlink()
    (ARTIFACTS / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-", str(ARTIFACTS / "page")], input=pdf, check=True)
    pictures = sorted(ARTIFACTS.glob("page-*.png"))
    assert len(pictures) == len(pages)
    shapes = []
    for picture in pictures:
        with Image.open(picture) as image:
            shapes.append(image.width > image.height)
    assert True in shapes and False in shapes  # landscape and portrait pages


def test_a_missing_font_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from audits.reports.pdf import ReportPdfError, styles

    missing = {**styles._FONT_FILES, styles.SANS: ("/nonexistent/DejaVuSans.ttf", "fonts-dejavu-core")}
    monkeypatch.setattr(styles, "_FONT_FILES", missing)
    with pytest.raises(ReportPdfError, match=r"/nonexistent/DejaVuSans\.ttf is missing: install .*fonts-dejavu-core"):
        styles.register_fonts.__wrapped__()
