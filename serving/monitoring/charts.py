"""SVG charts of a deployment's monitoring, drawn by ``common.charts`` (imported when a chart is
drawn, so that reading a log does not load reportlab): a self-contained ``<svg>`` element, every
text escaped, the output a function of the arguments only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from serving.monitoring.windows import PROMPT_CHAR_BIN_LABELS, parse_time


def _time_format(span_s: float) -> str:
    if span_s >= 86400:
        return "%m-%d %H:%M"
    if span_s >= 120:
        return "%H:%M"
    return "%H:%M:%S"


def svg_line_chart(
    series: Mapping[str, Sequence[tuple[datetime, float | None]]],
    *,
    title: str,
    y_label: str,
    width: int = 640,
    height: int = 240,
) -> str:
    """A self-contained SVG line chart of time series (no script, no external resource).

    One line per series, in the mapping's order; a ``None`` value breaks its line (a point with no
    neighbour is drawn as a dot). The x axis steps through the moments of all series, equally
    spaced and labelled in UTC: pass points on a regular grid (as ``window_stats`` returns them).
    The y axis starts at 0 unless a value is negative. Raises ValueError for a naive datetime, a
    non-finite value or a chart smaller than 200 x 120.
    """
    from common import charts

    moments = sorted({parse_time(moment) for values in series.values() for moment, _ in values})
    column = {moment: index for index, moment in enumerate(moments)}
    rows: dict[str, list[float | None]] = {}
    for name, values in series.items():
        rows[name] = [None] * len(moments)
        for moment, value in values:
            rows[name][column[parse_time(moment)]] = value
    time_format = _time_format((moments[-1] - moments[0]).total_seconds() if moments else 0)
    labels = [moment.astimezone(UTC).strftime(time_format) for moment in moments]
    chart = charts.Chart(
        "line", labels, rows, title=title, y_label=y_label, x_label="time (UTC)", width=width, height=height,
        font_size=10,
    )  # fmt: skip
    return charts.svg(chart)


def svg_bar_chart(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_label: str,
    labels: Sequence[str] = PROMPT_CHAR_BIN_LABELS,
    normalise: bool = False,
    width: int = 640,
    height: int = 240,
) -> str:
    """A self-contained SVG bar chart of histograms over the same bins (grouped bars per bin).

    ``series`` maps a name (e.g. "baseline", "last hour") to one non-negative value per label;
    ``labels`` default to the prompt-length bins. ``normalise`` plots each series' shares (count /
    its total) rather than counts, so that windows of different sizes compare; an all-zero series
    then stays at zero. Raises ValueError for a series of the wrong length, a negative or
    non-finite value, or a chart smaller than 200 x 120.
    """
    from common import charts

    values: dict[str, list[float | None]] = {}
    for name, counts in series.items():
        if len(counts) != len(labels):
            raise ValueError(f"series {name!r} has {len(counts)} values for {len(labels)} labels")
        if any(not math.isfinite(count) or count < 0 for count in counts):
            raise ValueError(f"series {name!r} has a negative or non-finite value")
        total = sum(counts)
        values[name] = [count / total if normalise and total else float(count) for count in counts]
    chart = charts.Chart("bar", labels, values, title=title, y_label=y_label, width=width, height=height, font_size=10)
    return charts.svg(chart)
