"""The one chart module (``common.charts``): one layout, written as a reportlab Drawing, SVG and
PNG, each a function of the chart alone. The callers' charts are tested where they are drawn
(serving monitoring, bias evaluations, report PDFs)."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from PIL import Image
from reportlab.graphics.shapes import Drawing, Group, String, UserNode

from common import charts

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

SVG = "{http://www.w3.org/2000/svg}"

BARS = charts.Chart(
    "bar", ["A", "B", "C"], {"rate": [0.8, 0.3, None]}, title="rate by group", x_label="group", y_label="rate",
    notes=["0.800\nn=300", "0.300\nn=300", "no records"], reference=("overall", 0.55), y_max=1.2,
)  # fmt: skip
LINES = charts.Chart(
    "line", [f"{hour:02d}:00" for hour in range(24)],
    {"p50": [float(hour % 5) for hour in range(24)], "p99": [None if hour in (3, 5) else 9.0 for hour in range(24)]},
    title="Latency", y_label="ms", x_label="time (UTC)",
)  # fmt: skip


def _texts(svg: str) -> list[str | None]:
    return [text.text for text in ET.fromstring(svg).iter(f"{SVG}text")]  # noqa: S314  (our own output)


def test_every_output_is_a_function_of_the_chart() -> None:
    for chart in (BARS, LINES):
        assert charts.svg(chart) == charts.svg(chart)
        assert charts.png(chart) == charts.png(chart)


def test_svg_carries_the_chart_and_nothing_active() -> None:
    svg = charts.svg(BARS)
    root = ET.fromstring(svg)  # noqa: S314
    assert root.get("role") == "img" and root.get("aria-label") == "rate by group"
    assert root.find(f"{SVG}title").text == "rate by group"  # type: ignore[union-attr]
    texts = _texts(svg)
    for expected in ("rate by group", "group", "rate", "A", "C", "0.800", "n=300", "no records", "overall", "1.2"):
        assert expected in texts, expected
    assert not svg.startswith("<?xml") and " id=" not in svg and "<script" not in svg and "href" not in svg


def test_line_breaks_at_a_gap_and_dots_a_lone_point() -> None:
    root = ET.fromstring(charts.svg(LINES))  # noqa: S314
    lines = [p.get("points", "") for p in root.iter(f"{SVG}polyline") if ", " in p.get("points", "")]
    # p50 is one line; p99 breaks at 03:00 and 05:00 into 00-02 and 06-23, with 04:00 alone
    assert sorted(len(points.split(", ")) for points in lines) == [3, 18, 24]
    assert len(list(root.iter(f"{SVG}circle"))) == 1


def test_text_xml_cannot_carry_is_replaced_and_the_rest_escaped() -> None:
    hostile = '<script>alert("x")</script> & \x00'
    svg = charts.svg(charts.Chart("bar", [hostile], {hostile: [1.0]}, title=hostile, y_label=hostile))
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = ET.fromstring(svg)  # noqa: S314
    assert root.get("aria-label") == hostile.replace("\x00", "\ufffd")
    assert hostile.replace("\x00", "\ufffd") in _texts(svg)


def test_png_is_scale_pixels_a_point() -> None:
    png = charts.png(BARS, scale=1.5)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (960, 360)
        # the bars are drawn in the first colour of the palette
        assert (31, 119, 180) in {colour for _, colour in image.getcolors(maxcolors=1 << 16) or []}


def test_a_chart_without_data_says_so_and_is_short() -> None:
    for chart in (
        charts.Chart("line", [], {}, title="nothing"),
        charts.Chart("bar", ["a"], {"s": [None]}, title="nothing"),
    ):
        picture = charts.drawing(chart)
        assert isinstance(picture, Drawing) and picture.height < 60
        assert "no data" in _texts(charts.svg(chart))
        charts.png(chart)


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        (charts.Chart("bar", ["a", "b"], {"s": [1.0]}), "1 values for 2 categories"),
        (charts.Chart("line", ["a"], {"s": [float("nan")]}), "not a finite number"),
        (charts.Chart("bar", ["a"], {"s": [1.0]}, notes=[]), "0 notes for 1 categories"),
        (charts.Chart("bar", ["a"], {"s": [1.0]}, reference=("r", float("inf"))), "not a finite number"),
        (charts.Chart("bar", ["a"], {"s": [1.0]}, width=100), "at least 200 x 120"),
    ],
)
def test_a_chart_that_cannot_be_drawn_is_refused(chart: charts.Chart, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        charts.drawing(chart)


def test_nice_ticks() -> None:
    assert charts.nice_ticks(0, 110) == ([0, 20, 40, 60, 80, 100, 120], 0)
    assert charts.nice_ticks(0, 0.3) == ([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 2)
    assert charts.nice_ticks(-3, 8) == ([-4, -2, 0, 2, 4, 6, 8], 0)
    assert charts.nice_ticks(0, 0) == ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1)  # all zero: an axis up to 1


def _fonts_of(node: object) -> set[str]:
    """The fonts of every text a drawing holds, legends' and axes' included."""
    if isinstance(node, UserNode):
        node = node.provideNode()
    if isinstance(node, String):
        return {node.fontName}
    if isinstance(node, Group):
        return set().union(*(_fonts_of(child) for child in node.getContents()))
    return set()


def test_the_fonts_option_leaves_the_default_outputs_alone() -> None:
    # The outputs' digests from before Chart.fonts existed (fee85e2): a bias chart's PNG digest is
    # part of what a waiver vouches for, so the default must draw the very same bytes.
    assert hashlib.sha256(charts.png(BARS)).hexdigest() == (
        "b9435fe7af68e2ada89c1d067aef8b20ad8a2f4b51f1626ece7319375422138f"
    )
    assert hashlib.sha256(charts.svg(BARS).encode()).hexdigest() == (
        "47f0ff128fc98eea5eda246500fedabf0aa22ebe0ccea455e28b529a9944820f"
    )
    assert _fonts_of(charts.drawing(BARS)) == {"Helvetica", "Helvetica-Bold"}
    # Given fonts (the report PDFs' embedded ones), every text is set in them.
    assert _fonts_of(charts.drawing(replace(BARS, fonts=("Courier", "Courier-Bold")))) == {"Courier", "Courier-Bold"}
    empty = charts.Chart("bar", [], {}, title="nothing", fonts=("Courier", "Courier-Bold"))
    assert _fonts_of(charts.drawing(empty)) == {"Courier", "Courier-Bold"}


def test_counts_get_whole_number_ticks() -> None:
    from common.charts import nice_ticks

    assert nice_ticks(0, 1) == ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1)  # a measure: fractions are fine
    assert nice_ticks(0, 1, whole=True) == ([0, 1], 0)  # a count of one: no 0.5 of a thing
    assert nice_ticks(0, 3, whole=True) == ([0, 1, 2, 3], 0)
    assert nice_ticks(0, 40, whole=True)[0] == [0, 10, 20, 30, 40]
