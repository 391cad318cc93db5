"""The one way to draw a chart: a :class:`Chart` says what to show, :func:`drawing` lays it out as
a reportlab Drawing, and that one layout is written out three ways: as a flowable in the signed
PDF reports (the Drawing itself, vector, its text extractable), as SVG for the admin
(:func:`svg`, reportlab's own SVG renderer) and as PNG for evidence (:func:`png`, a small Pillow
renderer of the same Drawing below; reportlab's PNG renderer needs rlPyCairo or rl_renderPM,
neither in the lock).

Why reportlab and not matplotlib: reports need the chart as vector drawing with its text, which
matplotlib cannot hand to reportlab without svglib (not in the lock) or a raster image; and
matplotlib's Figure and Agg take 0.4-0.6 s to import against 0.1-0.2 s for this module, whose
reportlab the reports load anyway. Measured on 2 cores, per chart: a 640 x 240 line chart of two
24-point series as SVG ~18 ms here, ~70-80 ms with matplotlib; the bias chart as PNG ~30 ms here,
~95 ms with matplotlib. The hand-written SVG this replaces took 0.1 ms: too little to matter.

Every output is a function of the chart alone (same chart, same bytes: the bias chart's digest is
part of what a waiver vouches for). Text is kept as given but for characters XML cannot carry,
replaced by U+FFFD so that the SVG always parses; the SVG renderer escapes the rest. Caveats: text
is set in Helvetica (the PDF standard font: Latin-1 only in PDFs) unless ``Chart.fonts`` names fonts
registered with reportlab (the reports' embedded TrueType fonts: for the PDF Drawing only), the PNG
draws it with reportlab's bundled Bitstream Vera narrowed to Helvetica's widths; a line chart's x axis is
categorical (equal steps), so callers pass points on a regular grid. Importing this module loads
reportlab's graphics (~0.1 s): callers on a start-up path import it inside the function that draws.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import reportlab
from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend, LineSwatch
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Circle, Drawing, Group, Line, Polygon, PolyLine, Rect, String, UserNode
from reportlab.graphics.transform import mmult
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
REFERENCE_COLOUR = "#555555"
_FONT, _BOLD = "Helvetica", "Helvetica-Bold"
_MAX_AXIS_LABELS = 12
# Characters that XML 1.0 does not allow, even escaped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SANS = "Helvetica, Arial, 'Liberation Sans', sans-serif"
_SVG_FONTS = {
    _FONT: {"family": _SANS},
    _BOLD: {"family": _SANS, "weight": "bold"},
    "Helvetica-Oblique": {"family": _SANS, "style": "italic"},
}
_PNG_FONTS = {_FONT: "Vera.ttf", _BOLD: "VeraBd.ttf", "Helvetica-Oblique": "VeraIt.ttf"}
_PNG_SUPERSAMPLE = 2  # drawn at twice the size and scaled down: Pillow does not smooth lines


@dataclass(frozen=True)
class Chart:
    """A bar chart (grouped bars per category) or a line chart over ``categories``.

    ``series`` maps a name to one value per category; ``None`` is no bar, or a gap in the line (a
    point with no neighbour is drawn as a dot). ``title`` may be left empty where the caller sets
    it apart (a report's heading). ``notes`` are text above each category (``\\n`` breaks lines);
    ``reference`` a dashed horizontal line with its legend name; ``y_max`` a value the y axis must
    reach. The y axis starts at 0 unless a value is negative. ``width`` and ``height`` are in
    points (pixels in SVG), legend included; a chart without data is only as high as its title
    and the words "no data".
    """

    kind: Literal["bar", "line"]
    categories: Sequence[str]
    series: Mapping[str, Sequence[float | None]]
    title: str = ""
    y_label: str = ""
    x_label: str = ""
    notes: Sequence[str] | None = None
    reference: tuple[str, float] | None = None
    y_max: float | None = None
    width: float = 640
    height: float = 240
    font_size: float = 9
    # (regular, bold): fonts registered with reportlab, for a chart drawn into a PDF that embeds
    # them (the reports). None: Helvetica, as the SVG and PNG outputs expect.
    fonts: tuple[str, str] | None = None
    # The values are counts: ticks on whole numbers only (a step of at least 1).
    counts: bool = False


def _clean(text: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(text))


def _check(chart: Chart) -> list[list[float | None]]:
    if chart.width < 200 or chart.height < 120:
        raise ValueError(f"a chart needs at least 200 x 120 points, not {chart.width} x {chart.height}")
    rows = []
    for name, values in chart.series.items():
        if len(values) != len(chart.categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(chart.categories)} categories")
        if any(v is not None and not math.isfinite(v) for v in values):
            raise ValueError(f"series {name!r} holds a value that is not a finite number")
        rows.append([None if v is None else float(v) for v in values])
    if chart.notes is not None and len(chart.notes) != len(chart.categories):
        raise ValueError(f"{len(chart.notes)} notes for {len(chart.categories)} categories")
    if chart.reference is not None and not math.isfinite(chart.reference[1]):
        raise ValueError(f"the reference {chart.reference[0]!r} is not a finite number")
    return rows


def nice_ticks(low: float, high: float, count: int = 7, *, whole: bool = False) -> tuple[list[float], int]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten), at most
    ``count`` of them, and the number of decimals their labels need; ``whole``: steps of at least 1."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / (count - 1)
    if whole:
        raw = max(raw, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    step = next(multiple * power for multiple in (1, 2, 5, 10) if multiple * power >= raw)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(index * step, decimals) for index in range(first, last + 1)], decimals


def _runs(row: list[float | None]) -> list[list[float | None]]:
    """A line's row split at its gaps, each run a row of its own (reportlab joins across None)."""
    runs: list[list[float | None]] = []
    for index, value in enumerate(row):
        if value is None:
            continue
        if not runs or row[index - 1] is None:
            runs.append([None] * len(row))
        runs[-1][index] = value
    return runs


class _DashedSwatch(LineSwatch):
    """The reference line's sample in the legend: dashed, across the middle of the swatch."""

    def __init__(self) -> None:
        super().__init__()
        self.strokeColor, self.strokeDashArray = colors.HexColor(REFERENCE_COLOUR), [3, 2]

    def draw(self) -> Line:
        line = super().draw()
        line.y1 = line.y2 = self.y + self.height / 2
        return line


def _titled(canvas: Drawing, chart: Chart) -> Drawing:
    if chart.title:
        fs = chart.font_size
        bold = chart.fonts[1] if chart.fonts else _BOLD
        canvas.add(String(10, canvas.height - fs * 1.6, _clean(chart.title), fontName=bold, fontSize=fs + 3))
    return canvas


def drawing(chart: Chart) -> Drawing:
    """The chart laid out as a reportlab Drawing (a flowable in a PDF). Raises ValueError for a
    series of the wrong length, a non-finite value or a chart smaller than 200 x 120."""
    rows = _check(chart)
    fs = chart.font_size
    font = chart.fonts[0] if chart.fonts else _FONT
    title_height = fs * 2.8 if chart.title else fs
    values = [v for row in rows for v in row if v is not None]
    if not chart.categories or not values:
        canvas = _titled(Drawing(chart.width, title_height + fs * 2), chart)
        italic = font if chart.fonts else "Helvetica-Oblique"
        canvas.add(String(10, fs * 0.8, "no data", fontName=italic, fontSize=fs))
        return canvas
    swatches = [(colors.HexColor(PALETTE[i % len(PALETTE)]), _clean(name)) for i, name in enumerate(chart.series)]
    if chart.reference is not None:
        swatches.append((_DashedSwatch(), _clean(chart.reference[0])))
    legend = Legend()
    legend.colorNamePairs = swatches
    legend.fontName, legend.fontSize, legend.alignment, legend.boxAnchor = font, fs, "right", "sw"
    legend.strokeColor = None
    legend.x, legend.y, legend.dx, legend.dy, legend.deltay = 10, 4, fs, fs, fs * 1.4
    legend.deltax = max(stringWidth(name, font, fs) for _, name in swatches) + fs * 4
    legend.columnMaximum = math.ceil(len(swatches) / max(1, int((chart.width - 20) // legend.deltax)))
    legend_height = legend.columnMaximum * legend.deltay + fs
    canvas = _titled(Drawing(chart.width, chart.height), chart)
    top = canvas.height - title_height

    high = max(values) if chart.y_max is None else max(chart.y_max, *values)
    ticks, decimals = nice_ticks(min(0.0, *values), high, whole=chart.counts)
    tick_labels = [f"{tick:,.{decimals}f}" for tick in ticks]
    left = 10 + max(stringWidth(label, font, fs) for label in tick_labels) + (fs * 1.8 if chart.y_label else 0)
    plot: Any = VerticalBarChart() if chart.kind == "bar" else HorizontalLineChart()
    plot.x, plot.width = left, chart.width - left - 12
    # Every bar keeps its label (at most 12, else every n-th), set at an angle when they would
    # collide; a line's labels are thinned out until they fit level.
    labels = [_clean(category) for category in chart.categories]
    longest, slot = max(stringWidth(label, font, fs) for label in labels), plot.width / len(labels)
    step = math.ceil(len(labels) / _MAX_AXIS_LABELS)
    if chart.kind == "line":
        step = max(step, math.ceil((longest + 1.5 * fs) / slot))
    shown = [label if i % step == 0 else "" for i, label in enumerate(labels)]
    slanted = longest > slot * step - 1.5 * fs
    below_axis = fs * 1.8 + (longest * 0.5 + fs if slanted else 0)
    x_label_height = fs * 1.8 if chart.x_label else 0
    plot.y = legend_height + x_label_height + below_axis
    plot.height = top - plot.y
    plot.categoryAxis.categoryNames = shown
    plot.categoryAxis.labels.fontName, plot.categoryAxis.labels.fontSize = font, fs
    plot.categoryAxis.labels.textAnchor = "middle"  # anchored, not placed by Helvetica's widths (SVG)
    if slanted:
        plot.categoryAxis.labels.angle = 30
        plot.categoryAxis.labels.boxAnchor, plot.categoryAxis.labels.textAnchor = "ne", "end"
    axis = plot.valueAxis
    axis.valueMin, axis.valueMax, axis.valueSteps = ticks[0], ticks[-1], ticks
    axis.labelTextFormat = lambda value: f"{value:,.{decimals}f}"
    axis.labels.fontName, axis.labels.fontSize, axis.labels.textAnchor = font, fs, "end"
    axis.visibleGrid, axis.gridStrokeColor, axis.gridStrokeWidth = True, colors.HexColor("#e5e5e5"), 0.5

    def y_of(value: float) -> float:
        return plot.y + (value - ticks[0]) / (ticks[-1] - ticks[0]) * plot.height

    if isinstance(plot, VerticalBarChart):
        plot.data = rows
        plot.barSpacing = 0
        for i in range(len(rows)):
            plot.bars[i].fillColor = colors.HexColor(PALETTE[i % len(PALETTE)])
            plot.bars[i].strokeColor = None
    else:
        plot.data = []
        for i, row in enumerate(rows):
            colour = colors.HexColor(PALETTE[i % len(PALETTE)])
            for run in _runs(row):
                line = plot.lines[len(plot.data)]
                line.strokeColor, line.strokeWidth = colour, 1.5
                if sum(v is not None for v in run) == 1:
                    line.strokeColor = None
                    line.symbol = makeMarker("FilledCircle", size=5, fillColor=colour, strokeColor=None)
                plot.data.append(run)
    canvas.add(plot)
    if chart.y_label:
        label = String(0, 0, _clean(chart.y_label), fontName=font, fontSize=fs, textAnchor="middle")
        canvas.add(Group(label, transform=(0, 1, -1, 0, fs + 2, plot.y + plot.height / 2)))
    if chart.x_label:
        canvas.add(
            String(plot.x + plot.width / 2, legend_height + fs * 0.6, _clean(chart.x_label), fontName=font,
                   fontSize=fs, textAnchor="middle")
        )  # fmt: skip
    if chart.reference is not None:
        y = y_of(chart.reference[1])
        colour = colors.HexColor(REFERENCE_COLOUR)
        canvas.add(Line(plot.x, y, plot.x + plot.width, y, strokeColor=colour, strokeWidth=1, strokeDashArray=(4, 3)))
    for index, note in enumerate(chart.notes or ()):
        column = [row[index] for row in rows if row[index] is not None]
        y = y_of(max([0.0, *column])) + 3
        center = plot.x + (index + 0.5) * plot.width / len(chart.categories)
        for offset, text in enumerate(reversed(_clean(note).split("\n"))):
            canvas.add(String(center, y + offset * (fs + 1), text, fontName=font, fontSize=fs - 1, textAnchor="middle"))
    canvas.add(legend)
    return canvas


def svg(chart: Chart) -> str:
    """The chart as a self-contained ``<svg>`` element (no script, no external resource, no id), to
    be set inline in a page; its ``<title>`` and ``aria-label`` are the chart's title."""
    picture = drawing(chart)
    title = _clean(chart.title)
    canvas = _SvgCanvas(
        (picture.width, picture.height), useClip=True, fontHacks=_SVG_FONTS,
        svgAttrs={"role": "img", "aria-label": title},
    )  # fmt: skip
    canvas.groupTree.removeAttribute("id")
    canvas.svg.getElementsByTagName("title")[0].firstChild.data = title
    canvas.svg.removeChild(canvas.svg.getElementsByTagName("desc")[0])
    renderSVG.draw(picture, canvas)
    return str(canvas.svg.toxml())


class _SvgCanvas(renderSVG.SVGCanvas):
    """Text anchored by SVG's ``text-anchor``: renderSVG shifts it by Helvetica's widths, which
    puts it out of place in a browser that has another font."""

    def drawString(self, s: str, x: float, y: float, angle: float = 0, link_info: Any = None,
                   text_anchor: str = "left", textRenderMode: int = 0, **attributes: Any) -> None:  # fmt: skip
        if text_anchor in ("middle", "end", "numeric"):
            attributes["text-anchor"] = "middle" if text_anchor == "middle" else "end"
        super().drawString(s, x, y, angle, link_info, "start", textRenderMode, **attributes)


def png(chart: Chart, *, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes, ``scale`` pixels per point. Draws the shapes reportlab's charts are
    made of (lines, rectangles, polygons, circles, text, groups with their transforms); raises
    TypeError for any other."""
    from PIL import Image, ImageDraw

    picture = drawing(chart)
    factor = scale * _PNG_SUPERSAMPLE
    size = (round(picture.width * factor), round(picture.height * factor))
    image = Image.new("RGB", size, "white")
    _PngPainter(image, ImageDraw.Draw(image), factor, picture.height).paint(picture, (1, 0, 0, 1, 0, 0))
    image = image.reduce(_PNG_SUPERSAMPLE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.lru_cache(maxsize=64)
def _png_font(name: str, size: float) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(reportlab.__file__).parent / "fonts" / _PNG_FONTS.get(name, "Vera.ttf")), size)


def _rgb(colour: Any) -> tuple[int, int, int] | None:
    if colour is None:
        return None
    red, green, blue = colour.rgb()
    return round(red * 255), round(green * 255), round(blue * 255)


class _PngPainter:
    def __init__(self, image: Any, pen: Any, factor: float, height: float) -> None:
        self.image, self.pen, self.factor, self.height = image, pen, factor, height

    def point(self, ctm: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
        a, b, c, d, e, f = ctm
        return (a * x + c * y + e) * self.factor, (self.height - (b * x + d * y + f)) * self.factor

    def paint(self, node: Any, ctm: tuple[float, ...]) -> None:
        if isinstance(node, UserNode):  # a chart, a legend, a marker: the shapes it stands for
            node = node.provideNode()
        stroke, fill = _rgb(getattr(node, "strokeColor", None)), _rgb(getattr(node, "fillColor", None))
        width = max(1, round(getattr(node, "strokeWidth", 1) * self.factor))
        if isinstance(node, Group):
            ctm = tuple(mmult(ctm, node.transform))
            for child in node.getContents():
                self.paint(child, ctm)
        elif isinstance(node, String):
            self.text(node, ctm)
        elif isinstance(node, Rect):
            if node.width and node.height:
                x0, y0 = self.point(ctm, node.x, node.y)
                x1, y1 = self.point(ctm, node.x + node.width, node.y + node.height)
                box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
                self.pen.rectangle(box, fill=fill, outline=stroke, width=width if stroke else 0)
        elif isinstance(node, Circle):
            x, y = self.point(ctm, node.cx, node.cy)
            r = node.r * self.factor
            self.pen.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=stroke, width=width if stroke else 0)
        elif isinstance(node, Line | PolyLine | Polygon):
            flat = [node.x1, node.y1, node.x2, node.y2] if isinstance(node, Line) else list(node.points)
            points = [self.point(ctm, flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
            if isinstance(node, Polygon):
                self.pen.polygon(points, fill=fill, outline=stroke)
            elif stroke is not None and len(points) > 1:
                dash = getattr(node, "strokeDashArray", None)
                for segment in _dashed(points, [v * self.factor for v in dash]) if dash else [points]:
                    self.pen.line(segment, fill=stroke, width=width, joint="curve")
        else:
            raise TypeError(f"the PNG renderer cannot draw a {type(node).__name__}")

    def text(self, node: String, ctm: tuple[float, ...]) -> None:
        if not node.text or node.fillColor is None:
            return
        size = node.fontSize * self.factor
        font = _png_font(node.fontName, size)
        # Vera is wider than Helvetica, whose widths the layout used: narrowed to fit.
        wanted = stringWidth(node.text, node.fontName, node.fontSize) * self.factor
        if font.getlength(node.text) > wanted > 0:
            font = _png_font(node.fontName, round(size * wanted / font.getlength(node.text), 1))
        anchor = {"start": "ls", "middle": "ms"}.get(node.textAnchor, "rs")
        x, y = self.point(ctm, node.x, node.y)
        angle = math.degrees(math.atan2(ctm[1], ctm[0]))
        if abs(angle) < 0.01:
            self.pen.text((x, y), node.text, font=font, fill=_rgb(node.fillColor), anchor=anchor)
            return
        from PIL import Image, ImageDraw

        # Turned text: drawn on a square tile around its anchor, turned about it, pasted there.
        half = math.ceil(font.getlength(node.text) + size)
        tile = Image.new("L", (2 * half, 2 * half), 0)
        ImageDraw.Draw(tile).text((half, half), node.text, font=font, fill=255, anchor=anchor)
        if round(angle, 6) == 90:  # an axis label: a quarter turn is exact and fast
            tile = tile.transpose(Image.Transpose.ROTATE_90)
        else:
            tile = tile.rotate(angle, resample=Image.Resampling.BICUBIC, center=(half, half))
        self.image.paste(_rgb(node.fillColor), (round(x) - half, round(y) - half), mask=tile)


def _dashed(points: list[tuple[float, float]], pattern: list[float]) -> list[list[tuple[float, float]]]:
    """The drawn pieces of a polyline under a dash pattern (on, off, on, ...), restarted at each
    corner."""
    pieces = []
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length, at, index = math.hypot(x1 - x0, y1 - y0), 0.0, 0
        while at < length:
            end = min(length, at + pattern[index % len(pattern)])
            if index % 2 == 0:
                pieces.append([(x0 + (x1 - x0) * t / length, y0 + (y1 - y0) * t / length) for t in (at, end)])
            at, index = end, index + 1
    return pieces
