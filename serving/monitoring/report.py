"""The JSON view of a deployment's windows and their drift that the API answers with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from serving.monitoring.drift import PSI_MODERATE, PSI_SIGNIFICANT, baseline_index, drift_series
from serving.monitoring.windows import PROMPT_CHAR_BIN_LABELS, WindowStats


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(windows: Sequence[WindowStats]) -> dict[str, Any]:
    """A JSON-serialisable view of ``windows`` and their drift, for the API (times ISO 8601 UTC)."""
    drifts = drift_series(windows)
    baseline = baseline_index(windows)
    return {
        "window_s": int((windows[0].end - windows[0].start).total_seconds()) if windows else None,
        "prompt_chars_bins": list(PROMPT_CHAR_BIN_LABELS),
        "drift_thresholds": {"moderate": PSI_MODERATE, "significant": PSI_SIGNIFICANT},
        "baseline_start": None if baseline is None else _iso(windows[baseline].start),
        "windows": [
            {
                "start": _iso(window.start),
                "end": _iso(window.end),
                "requests": window.requests,
                "errors": window.errors,
                "error_rate": window.error_rate,
                "client_errors": window.client_errors,
                "client_error_rate": window.client_error_rate,
                "latency_ms": {
                    "p50": window.latency_p50_ms,
                    "p95": window.latency_p95_ms,
                    "p99": window.latency_p99_ms,
                },
                "prompt_chars": {
                    "histogram": list(window.prompt_chars_histogram),
                    "unknown": window.prompt_chars_unknown,
                },
                "guard": {
                    "hits": window.guard_hits,
                    "hit_rate": window.guard_hit_rate,
                    "by_action": dict(window.guard_hits_by_action),
                    "by_entity": dict(window.guard_hits_by_entity),
                },
                "feedback": {"count": window.feedback_count, "mean_rating": window.feedback_mean_rating},
                "drift": {
                    "prompt_chars_psi": drifted.prompt_chars_psi,
                    "level": drifted.prompt_chars_drift_level,
                    "guard_hit_rate_delta": drifted.guard_hit_rate_delta,
                },
            }
            for window, drifted in zip(windows, drifts, strict=True)
        ],
    }
