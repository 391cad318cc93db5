"""Bar and line charts of a report, drawn by ``common.charts`` as vector drawings under a
heading of the report's style."""

from __future__ import annotations

from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, KeepTogether, Spacer
from reportlab.platypus import Paragraph as RLParagraph

from audits.reports.pdf.document import BarChart, LineChart, ReportPdfError
from audits.reports.pdf.styles import markup
from common import charts

_CHART_HEIGHT = 210


def chart_flowables(chart: BarChart | LineChart, available: float, styles: dict[str, ParagraphStyle]) -> list[Flowable]:
    kind = "bar" if isinstance(chart, BarChart) else "line"
    labels = [str(label) for label in (chart.categories if isinstance(chart, BarChart) else chart.x_labels)]
    try:
        drawing = charts.drawing(
            charts.Chart(kind, labels, chart.series, width=available, height=_CHART_HEIGHT, font_size=7)
        )
    except ValueError as exc:
        raise ReportPdfError(f"{chart.title or 'a chart'}: {exc}") from None
    return [KeepTogether([RLParagraph(markup(chart.title), styles["h2"]), drawing]), Spacer(1, 8)]
