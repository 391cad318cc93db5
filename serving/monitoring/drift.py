"""Drift of a deployment's traffic: the Population Stability Index of each window's prompt-length
histogram against the baseline window's, and the change of its guard hit rate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from serving.monitoring.windows import WindowStats

# PSI thresholds (the conventional credit-scoring ones): below 0.1 stable, 0.1 to 0.25 moderate,
# above 0.25 significant.
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
# A bin's share of 0 makes ln(p / q) infinite; such a share is replaced by this value (the other
# shares are left as they are, so the shares then sum to slightly more than 1).
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class WindowDrift:
    """Drift of one window against the baseline (the first window with a prompt length).

    ``None`` values: the window precedes the baseline, or it has no prompt length (PSI) or no
    request (guard hit rate delta). The delta is an absolute difference of rates (0.05 is five
    percentage points), positive when the window has more hits than the baseline.
    """

    start: datetime
    prompt_chars_psi: float | None
    prompt_chars_drift_level: str | None
    guard_hit_rate_delta: float | None


def psi(reference: Sequence[int], current: Sequence[int]) -> float:
    """Population Stability Index of ``current`` against ``reference`` (histogram counts, same bins).

    PSI = sum over bins of (c_i - r_i) * ln(c_i / r_i), where r_i and c_i are each histogram's
    shares (count / total). A share of 0 is replaced by ``PSI_EPSILON`` (1e-4) before the sum, so a
    bin empty on one side adds a large but finite term; a bin empty on both sides adds 0. The
    result is >= 0, and 0 for identical shares; see ``drift_level`` for the thresholds.

    Raises ValueError for histograms of different lengths, negative counts or an empty histogram.
    Caveat: PSI is noisy on small samples (around (bins - 1) * (1/n_ref + 1/n_cur) for two samples
    of one distribution), so a window of a few dozen requests can read "moderate" by chance.
    """
    if len(reference) != len(current):
        raise ValueError(f"histograms of {len(reference)} and {len(current)} bins")
    if any(count < 0 for count in (*reference, *current)):
        raise ValueError("a histogram count is negative")
    reference_total, current_total = sum(reference), sum(current)
    if reference_total == 0 or current_total == 0:
        raise ValueError("an empty histogram has no distribution to compare")
    total = 0.0
    for reference_count, current_count in zip(reference, current, strict=True):
        r = reference_count / reference_total or PSI_EPSILON
        c = current_count / current_total or PSI_EPSILON
        total += (c - r) * math.log(c / r)
    return total


def drift(reference: Sequence[int], current: Sequence[int]) -> float:
    """The drift statistic of the module: ``psi(reference, current)``."""
    return psi(reference, current)


def drift_level(value: float) -> str:
    """``stable`` below 0.1, ``moderate`` from 0.1 to 0.25 (both included), ``significant`` above."""
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"PSI {value!r} is not a non-negative number")
    if value < PSI_MODERATE:
        return "stable"
    if value <= PSI_SIGNIFICANT:
        return "moderate"
    return "significant"


def baseline_index(windows: Sequence[WindowStats]) -> int | None:
    """The index of the baseline window: the first with a prompt length (``None``: none has one)."""
    return next((index for index, window in enumerate(windows) if sum(window.prompt_chars_histogram)), None)


def drift_series(windows: Sequence[WindowStats]) -> list[WindowDrift]:
    """Per window, drift against the baseline: the first window with a prompt length (so with
    requests). The baseline's own PSI is 0. See ``WindowDrift`` for when values are None."""
    first = baseline_index(windows)
    series = []
    for index, window in enumerate(windows):
        value: float | None = None
        delta: float | None = None
        if first is not None and index >= first:
            baseline = windows[first]
            if sum(window.prompt_chars_histogram):
                value = psi(baseline.prompt_chars_histogram, window.prompt_chars_histogram)
            if window.guard_hit_rate is not None and baseline.guard_hit_rate is not None:
                delta = window.guard_hit_rate - baseline.guard_hit_rate
        series.append(
            WindowDrift(
                start=window.start,
                prompt_chars_psi=value,
                prompt_chars_drift_level=None if value is None else drift_level(value),
                guard_hit_rate_delta=delta,
            )
        )
    return series
