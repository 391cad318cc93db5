"""Bar and line charts of a report, drawn by ``common.charts`` as vector drawings under a
heading of the report's style, their labels in the report's embedded fonts: each character in a
font that has it, as in the rest of the report (``common.charts`` sets a label in one font)."""

from __future__ import annotations

from typing import Any

from reportlab.graphics import renderPDF
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, KeepTogether, Spacer
from reportlab.platypus import Paragraph as RLParagraph

from audits.reports.pdf.document import BarChart, LineChart, ReportPdfError
from audits.reports.pdf.styles import SANS, SANS_BOLD, covered, markup, runs, text_width
from common import charts

_CHART_HEIGHT = 210


class _FallbackRenderer(renderPDF._PDFRenderer):
    """reportlab's PDF renderer, but a label with characters its font lacks is drawn in runs,
    each in a font that has them."""

    def initState(self, x: float, y: float) -> None:
        # reportlab starts a drawing in Helvetica, which the page would then name unembedded.
        self._tracker._combined[-1]["fontName"] = SANS
        super().initState(x, y)

    def drawString(self, stringObj: String) -> None:
        state = self._tracker.getState()
        font, size, text = state["fontName"], state["fontSize"], stringObj.text
        if covered(text, font) or not self._fill:
            super().drawString(stringObj)
            return
        x, width = stringObj.x, text_width(text, font, size)
        anchor = state["textAnchor"]
        if anchor == "end":
            x -= width
        elif anchor in ("middle", "numeric"):
            x -= width / 2
        canvas: Any = self._canvas
        for name, part in runs(text, font):
            canvas.setFont(name, size)
            canvas.drawString(x, stringObj.y, part)
            x += text_width(part, name, size)
        canvas.setFont(font, size)


class _Chart(Flowable):
    def __init__(self, drawing: Drawing) -> None:
        super().__init__()
        self._drawing = drawing
        self.width, self.height = drawing.width, drawing.height

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        _FallbackRenderer().draw(renderPDF.renderScaledDrawing(self._drawing), self.canv, 0, 0)


def _whole(series: dict[str, list[float]]) -> bool:
    """Every value a whole number (the reports' charts count things): whole-number ticks."""
    return all(value is None or float(value).is_integer() for values in series.values() for value in values)


def chart_flowables(chart: BarChart | LineChart, available: float, styles: dict[str, ParagraphStyle]) -> list[Flowable]:
    kind = "bar" if isinstance(chart, BarChart) else "line"
    labels = [str(label) for label in (chart.categories if isinstance(chart, BarChart) else chart.x_labels)]
    try:
        drawing = charts.drawing(
            charts.Chart(
                kind, labels, chart.series, width=available, height=_CHART_HEIGHT, font_size=7,
                fonts=(SANS, SANS_BOLD), counts=_whole(chart.series),
            )
        )  # fmt: skip
    except ValueError as exc:
        raise ReportPdfError(f"{chart.title or 'a chart'}: {exc}") from None
    return [KeepTogether([RLParagraph(markup(chart.title), styles["h2"]), _Chart(drawing)]), Spacer(1, 8)]
