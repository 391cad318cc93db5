"""A window's statistics against a monitoring rule's bounds: which metrics crossed them.

Pure: no Django, no I/O. The metric names are those of the policy files (``deployment.monitor``):

- ``prompt_chars_psi``: the drift statistic of ``serving.monitoring.drift`` (PSI of the window's
  prompt-length histogram against the baseline window's);
- ``error_rate`` (status >= 500), ``latency_p95_ms`` (nearest rank), ``guard_hit_rate``: as
  ``window_stats`` computes them;
- ``negative_feedback_share``: ratings <= 2 among the window's ratings.

A bound is the largest value that is still fine: a metric crosses it when its value is strictly
greater. A window with fewer than ``min_requests`` requests (default 1) is not judged at all; the
feedback share is judged only with at least ``min_ratings`` ratings (default 1), so one bad rating
does not page anyone when the policy asks for more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from serving.monitoring.drift import drift_series
from serving.monitoring.windows import WindowStats, parse_time

METRICS: tuple[str, ...] = (
    "prompt_chars_psi", "error_rate", "latency_p95_ms", "guard_hit_rate", "negative_feedback_share",
)  # fmt: skip
NEGATIVE_RATING = 2  # a rating at most this is negative


@dataclass(frozen=True)
class Observation:
    """One window's value of each metric (``None`` where the window has none)."""

    start: datetime
    end: datetime
    requests: int
    ratings: int
    values: dict[str, float | None]


@dataclass(frozen=True)
class Breach:
    metric: str
    observed: float
    threshold: float
    window_start: datetime
    window_end: datetime
    requests: int

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "observed": self.observed, "threshold": self.threshold,
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "requests": self.requests,
        }  # fmt: skip


def observations(windows: Sequence[WindowStats], ratings: Iterable[Mapping[str, Any]] = ()) -> list[Observation]:
    """Each window's metrics. ``ratings``: ``{"time", "rating"}`` (``time`` the rated request's,
    so a rating counts in the window of the output it rates), as given to ``window_stats``."""
    negative = [0] * len(windows)
    counted = [0] * len(windows)
    for item in ratings:
        moment = parse_time(item["time"])
        index = next((i for i, w in enumerate(windows) if w.start <= moment < w.end), None)
        if index is not None:
            counted[index] += 1
            negative[index] += item["rating"] <= NEGATIVE_RATING
    found = []
    for index, (window, drift) in enumerate(zip(windows, drift_series(windows), strict=True)):
        values: dict[str, float | None] = {
            "prompt_chars_psi": drift.prompt_chars_psi,
            "error_rate": window.error_rate,
            "latency_p95_ms": window.latency_p95_ms,
            "guard_hit_rate": window.guard_hit_rate,
            "negative_feedback_share": negative[index] / counted[index] if counted[index] else None,
        }
        found.append(Observation(window.start, window.end, window.requests, counted[index], values))
    return found


def breaches(observation: Observation, thresholds: Mapping[str, float]) -> list[Breach]:
    """The metrics of ``observation`` above their bound in ``thresholds``, in ``METRICS`` order."""
    if observation.requests < thresholds.get("min_requests", 1):
        return []
    found = []
    for metric in METRICS:
        bound = thresholds.get(metric)
        value = observation.values.get(metric)
        if bound is None or value is None:
            continue
        if metric == "negative_feedback_share" and observation.ratings < thresholds.get("min_ratings", 1):
            continue
        if value > bound:
            found.append(
                Breach(metric, float(value), float(bound), observation.start, observation.end, observation.requests)
            )
    return found
