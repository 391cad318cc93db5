"""Monitoring of a deployment from its inference log: windowed statistics, drift, SVG charts.

No Django import, no I/O beyond ``read_log``: the admin, the API and a worker call it on records
they have read. Records are the model server's inference log lines (see ``serving.server``): the
keys used here are ``time`` (ISO 8601 UTC, e.g. ``2025-01-02T03:04:05.678Z``, or an aware
``datetime``), ``status``, ``latency_ms``, ``prompt_chars`` (null when the request was refused
before its prompt was read) and ``guard`` (``{"prompt": {"action", "entities"}, "completion":
{...}}``, a side absent when the guard did not check it).

    records, offset = read_log(path)
    windows = window_stats(records, window_s=3600)
    payload = summary(windows)                      # JSON for the API
    svg = svg_line_chart({"p95": [(w.start, w.latency_p95_ms) for w in windows]},
                         title="Latency", y_label="ms")

Definitions:

- Windows are half-open, ``[start, start + window_s)``, on a grid anchored at ``start`` or, without
  it, at the earliest time floored to a multiple of ``window_s`` since the Unix epoch (so hourly
  windows begin on the hour). Every window from the first to the last is returned, empty ones too.
- Errors are status >= 500; client errors are 400 <= status < 500 (a guard block is 422, so it
  counts here as well as in the guard hits). Rates are over all requests of the window; ``None``
  when the window has none.
- Latency percentiles use the nearest-rank method over every request of the window, errors
  included (latency as the client saw it): the p-th percentile of n sorted values is the value of
  rank ``ceil(p / 100 * n)`` (1-based). It is always an observed value; no interpolation.
- Prompt lengths are counted in ``PROMPT_CHAR_BINS`` (powers of two; see there); requests without
  a prompt length are counted apart in ``prompt_chars_unknown``.
- A guard hit is a request where either side was redacted or blocked. ``guard_hits_by_action``
  counts each hit once, under its most severe action (blocked over redacted);
  ``guard_hits_by_entity`` counts, per entity type, the hits where a redacted or blocked side held
  that type (requests, not occurrences).
- Drift is the Population Stability Index (``psi``) of a window's prompt-length histogram against
  the baseline window's; see ``psi`` and ``drift_level`` for the epsilon and the thresholds.

The parts: ``windows`` (statistics per window), ``drift`` (PSI against the baseline window),
``log`` (reading the inference log, and the summary of a log segment that the ledger records),
``report`` (the JSON view for the API) and ``charts`` (SVG).
"""

from serving.monitoring.charts import svg_bar_chart, svg_line_chart
from serving.monitoring.drift import (
    PSI_EPSILON,
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    WindowDrift,
    baseline_index,
    drift,
    drift_level,
    drift_series,
    psi,
)
from serving.monitoring.log import parse_log_line, read_log, read_log_skipping_unreadable, segment_summary
from serving.monitoring.report import summary
from serving.monitoring.windows import (
    GUARD_HIT_ACTIONS,
    LATENCY_PERCENTILES,
    MAX_WINDOWS,
    PROMPT_CHAR_BIN_LABELS,
    PROMPT_CHAR_BINS,
    WindowStats,
    parse_time,
    percentile_nearest_rank,
    prompt_chars_bin,
    record_problem,
    window_stats,
)

__all__ = [
    "GUARD_HIT_ACTIONS",
    "LATENCY_PERCENTILES",
    "MAX_WINDOWS",
    "PROMPT_CHAR_BINS",
    "PROMPT_CHAR_BIN_LABELS",
    "PSI_EPSILON",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "WindowDrift",
    "WindowStats",
    "baseline_index",
    "drift",
    "drift_level",
    "drift_series",
    "parse_log_line",
    "parse_time",
    "percentile_nearest_rank",
    "prompt_chars_bin",
    "psi",
    "read_log",
    "read_log_skipping_unreadable",
    "record_problem",
    "segment_summary",
    "summary",
    "svg_bar_chart",
    "svg_line_chart",
    "window_stats",
]
