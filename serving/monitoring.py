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
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _xml_escape

logger = logging.getLogger(__name__)

# Lower edges of the prompt-length bins, in characters: [0, 32), [32, 64), ..., [2048, 4096),
# [4096, inf). Powers of two because prompt lengths spread over orders of magnitude; the last bin
# is open so that every prompt has a bin whatever the deployment's max_prompt_chars.
PROMPT_CHAR_BINS: tuple[int, ...] = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PROMPT_CHAR_BIN_LABELS: tuple[str, ...] = tuple(
    [f"{low}-{high - 1}" for low, high in itertools.pairwise(PROMPT_CHAR_BINS)] + [f"≥{PROMPT_CHAR_BINS[-1]}"]
)

GUARD_HIT_ACTIONS: tuple[str, ...] = ("redacted", "blocked")  # least to most severe
LATENCY_PERCENTILES: tuple[int, ...] = (50, 95, 99)

# PSI thresholds (the conventional credit-scoring ones): below 0.1 stable, 0.1 to 0.25 moderate,
# above 0.25 significant.
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
# A bin's share of 0 makes ln(p / q) infinite; such a share is replaced by this value (the other
# shares are left as they are, so the shares then sum to slightly more than 1).
PSI_EPSILON = 1e-4

# A guard against a tiny window over a long log building millions of empty windows.
MAX_WINDOWS = 100_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class WindowStats:
    """The statistics of one window ``[start, end)``; see the module docstring for definitions."""

    start: datetime
    end: datetime
    requests: int
    errors: int
    error_rate: float | None
    client_errors: int
    client_error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    prompt_chars_histogram: tuple[int, ...]  # one count per PROMPT_CHAR_BINS bin
    prompt_chars_unknown: int
    guard_hits: int
    guard_hit_rate: float | None
    guard_hits_by_action: dict[str, int] = field(default_factory=dict)  # every GUARD_HIT_ACTIONS key
    guard_hits_by_entity: dict[str, int] = field(default_factory=dict)  # sorted by type
    feedback_count: int = 0
    feedback_mean_rating: float | None = None


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


# --- windows -------------------------------------------------------------------------------------


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from a log time (``...Z`` or an offset) or an aware datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"time {value!r} is not ISO 8601") from None
    else:
        raise ValueError(f"time {value!r} is neither an ISO 8601 string nor a datetime")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {value!r} has no time zone")
    return moment.astimezone(UTC)


def percentile_nearest_rank(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 < p <= 100) by nearest rank: the value of rank ceil(p/100 * n).

    ``None`` for no values. Exact for p given as an integer or a float with an exact product
    (the rank is computed as ``ceil(p * n / 100)``).
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return ordered[rank - 1]


def prompt_chars_bin(chars: int) -> int:
    """The index in ``PROMPT_CHAR_BINS`` of the bin that holds a prompt of ``chars`` characters."""
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
        raise ValueError(f"prompt_chars {chars!r} is not a non-negative integer")
    return bisect.bisect_right(PROMPT_CHAR_BINS, chars) - 1


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _describe(record: Mapping[str, Any]) -> str:
    return f"record {record.get('request_id')!r}" if isinstance(record, Mapping) else f"record {record!r}"


@dataclass
class _Bucket:
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    histogram: list[int] = field(default_factory=lambda: [0] * len(PROMPT_CHAR_BINS))
    prompt_chars_unknown: int = 0
    hits_by_action: Counter[str] = field(default_factory=Counter)
    hits_by_entity: Counter[str] = field(default_factory=Counter)
    ratings: list[int] = field(default_factory=list)


def _guard_hit(guard: Any, where: str) -> tuple[str | None, set[str]]:
    """The most severe hit action of a record's guard field (None: no hit) and its entity types."""
    if guard is None:
        return None, set()
    if not isinstance(guard, Mapping):
        raise ValueError(f"{where}: guard is not an object")
    worst: str | None = None
    types: set[str] = set()
    for side in ("prompt", "completion"):
        checked = guard.get(side)
        if checked is None:
            continue
        if not isinstance(checked, Mapping):
            raise ValueError(f"{where}: guard.{side} is not an object")
        action = checked.get("action")
        if action not in GUARD_HIT_ACTIONS:
            continue
        if worst is None or GUARD_HIT_ACTIONS.index(action) > GUARD_HIT_ACTIONS.index(worst):
            worst = action
        entities = checked.get("entities") or {}
        if not isinstance(entities, Mapping):
            raise ValueError(f"{where}: guard.{side}.entities is not an object")
        types.update(str(name) for name, count in entities.items() if count)
    return worst, types


def _record_fields(record: Mapping[str, Any], where: str) -> tuple[int, float | None, int | None, str | None, set[str]]:
    """A record's status, latency, prompt-length bin, guard hit action and entity types, checked
    (ValueError naming ``where`` and the field otherwise)."""
    status = record.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise ValueError(f"{where}: status {status!r} is not an integer")
    latency = record.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency < math.inf:
            raise ValueError(f"{where}: latency_ms {latency!r} is not a finite non-negative number")
        latency = float(latency)
    chars = record.get("prompt_chars")
    try:
        chars_bin = None if chars is None else prompt_chars_bin(chars)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    action, types = _guard_hit(record.get("guard"), where)
    return status, latency, chars_bin, action, types


def record_problem(record: Any) -> str | None:
    """Why ``window_stats`` would refuse this record, or ``None`` when it takes it."""
    where = _describe(record)
    if not isinstance(record, Mapping) or "time" not in record:
        return f"{where}: no time"
    try:
        parse_time(record["time"])
        _record_fields(record, where)
    except ValueError as exc:
        return str(exc)
    return None


def window_stats(
    records: Iterable[Mapping[str, Any]],
    *,
    window_s: int,
    start: datetime | None = None,
    feedback: Iterable[Mapping[str, Any]] | None = None,
) -> list[WindowStats]:
    """Statistics per fixed window of ``window_s`` seconds, in time order, empty windows included.

    Records may come in any order. With ``start``, the first window begins there and a record or
    feedback earlier than it is an error (nothing is dropped silently); without it, the first
    window holds the earliest time, floored to a multiple of ``window_s`` since the epoch.

    ``feedback``: dicts ``{"time": datetime, "request_id": str, "rating": int 1..5}`` (map thumbs
    to ratings before, e.g. up 5 and down 1). A rating counts in the window of the request it
    rates, so a window's mean rating speaks of the outputs produced in it; a rating whose request is
    not among ``records`` counts in the window of its own time. Without feedback the counts are 0.

    Raises ValueError on a malformed record (no or naive time, non-integer status, negative
    latency...), a bad rating, or more than ``MAX_WINDOWS`` windows. Caveat: records are held in
    memory per window (latencies, to sort them); a very long log is better cut before.
    """
    if isinstance(window_s, bool) or not isinstance(window_s, int) or window_s <= 0:
        raise ValueError(f"window_s must be a positive integer, not {window_s!r}")
    window_us = window_s * 1_000_000

    parsed: list[tuple[int, Mapping[str, Any]]] = []
    request_times: dict[str, int] = {}
    for record in records:
        where = _describe(record)
        if not isinstance(record, Mapping) or "time" not in record:
            raise ValueError(f"{where}: no time")
        moment = _micros(parse_time(record["time"]))
        parsed.append((moment, record))
        request_id = record.get("request_id")
        if isinstance(request_id, str):
            request_times[request_id] = moment

    ratings: list[tuple[int, int]] = []
    for item in feedback or ():
        rating = item.get("rating")
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise ValueError(f"feedback for {item.get('request_id')!r}: rating {rating!r} is not an integer 1..5")
        request_id = item.get("request_id")
        rated = request_times.get(request_id) if isinstance(request_id, str) else None
        if rated is None:
            if "time" not in item:
                raise ValueError(f"feedback for {item.get('request_id')!r}: no time, and its request is unknown")
            rated = _micros(parse_time(item["time"]))
        ratings.append((rated, rating))

    times = [moment for moment, _ in parsed] + [moment for moment, _ in ratings]
    if not times:
        return []
    if start is not None:
        origin = _micros(parse_time(start))
        earliest = min(times)
        if earliest < origin:
            raise ValueError(f"a record or feedback at {_EPOCH + earliest * _MICROSECOND} precedes start {start}")
    else:
        origin = min(times) // window_us * window_us
    count = (max(times) - origin) // window_us + 1
    if count > MAX_WINDOWS:
        raise ValueError(f"{count} windows of {window_s} s: over MAX_WINDOWS ({MAX_WINDOWS}); use a longer window")
    buckets = [_Bucket() for _ in range(count)]

    for moment, record in parsed:
        bucket = buckets[(moment - origin) // window_us]
        status, latency, chars_bin, action, types = _record_fields(record, _describe(record))
        bucket.statuses.append(status)
        if latency is not None:
            bucket.latencies.append(latency)
        if chars_bin is None:
            bucket.prompt_chars_unknown += 1
        else:
            bucket.histogram[chars_bin] += 1
        if action is not None:
            bucket.hits_by_action[action] += 1
            bucket.hits_by_entity.update(types)
    for moment, rating in ratings:
        buckets[(moment - origin) // window_us].ratings.append(rating)

    windows = []
    for index, bucket in enumerate(buckets):
        window_start = _EPOCH + (origin + index * window_us) * _MICROSECOND
        requests = len(bucket.statuses)
        errors = sum(1 for status in bucket.statuses if status >= 500)
        client_errors = sum(1 for status in bucket.statuses if 400 <= status < 500)
        hits = sum(bucket.hits_by_action.values())
        p50, p95, p99 = (percentile_nearest_rank(bucket.latencies, p) for p in LATENCY_PERCENTILES)
        windows.append(
            WindowStats(
                start=window_start,
                end=window_start + timedelta(seconds=window_s),
                requests=requests,
                errors=errors,
                error_rate=_rate(errors, requests),
                client_errors=client_errors,
                client_error_rate=_rate(client_errors, requests),
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                latency_p99_ms=p99,
                prompt_chars_histogram=tuple(bucket.histogram),
                prompt_chars_unknown=bucket.prompt_chars_unknown,
                guard_hits=hits,
                guard_hit_rate=_rate(hits, requests),
                guard_hits_by_action={action: bucket.hits_by_action[action] for action in GUARD_HIT_ACTIONS},
                guard_hits_by_entity=dict(sorted(bucket.hits_by_entity.items())),
                feedback_count=len(bucket.ratings),
                feedback_mean_rating=sum(bucket.ratings) / len(bucket.ratings) if bucket.ratings else None,
            )
        )
    return windows


# --- drift ---------------------------------------------------------------------------------------


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


def _baseline(windows: Sequence[WindowStats]) -> int | None:
    return next((index for index, window in enumerate(windows) if sum(window.prompt_chars_histogram)), None)


def drift_series(windows: Sequence[WindowStats]) -> list[WindowDrift]:
    """Per window, drift against the baseline: the first window with a prompt length (so with
    requests). The baseline's own PSI is 0. See ``WindowDrift`` for when values are None."""
    baseline_index = _baseline(windows)
    series = []
    for index, window in enumerate(windows):
        value: float | None = None
        delta: float | None = None
        if baseline_index is not None and index >= baseline_index:
            baseline = windows[baseline_index]
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


# --- log -----------------------------------------------------------------------------------------


def _log_lines(path: Path, start_offset: int) -> tuple[list[tuple[str, bytes]], int]:
    """The whole, non-blank lines of the log from ``start_offset``, each with where it is (line
    number from the offset, byte offset), and the offset after the last whole line."""
    if start_offset < 0:
        raise ValueError(f"start_offset {start_offset} is negative")
    path = Path(path)
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        if start_offset > size:
            raise ValueError(f"{path}: offset {start_offset} is past the end ({size} bytes); was the log replaced?")
        if start_offset > 0:
            handle.seek(start_offset - 1)
            if handle.read(1) != b"\n":
                raise ValueError(f"{path}: offset {start_offset} is not at the start of a line")
        handle.seek(start_offset)
        data = handle.read()

    lines: list[tuple[str, bytes]] = []
    position = 0
    number = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            logger.info(
                "%s: skipped a partial last line (%d bytes at offset %d)",
                path,
                len(data) - position,
                start_offset + position,
            )
            break
        number += 1
        line = data[position:newline]
        where = f"{path}: line {number} (byte {start_offset + position})"
        position = newline + 1
        if line.strip():
            lines.append((where, line))
    return lines, start_offset + position


def parse_log_line(line: bytes) -> dict[str, Any]:
    """One whole inference log line as a JSON object; ValueError saying what it is not."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # an integer too long, arrays nested too deep
        raise ValueError(f"is not JSON this reader takes: {type(exc).__name__}") from None
    if not isinstance(record, dict):
        raise ValueError("is not a JSON object")
    return record


def read_log(path: Path, *, start_offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The records of an inference log from ``start_offset``, and the offset after the last whole line.

    Pass the returned offset back to read what was appended since. A last line without its newline
    is a write in progress (or torn by a crash): it is skipped, logged at INFO with its length, and
    the returned offset stays before it, so the next call reads it once it is whole. Blank lines are
    skipped. Raises ValueError naming the line (1-based, counted from ``start_offset``) and its byte
    offset for a whole line that is not UTF-8 or not a JSON object, and for an offset that is past
    the end of the file (the log was truncated or replaced) or not at the start of a line. Readers
    that must go on past a bad line use ``read_log_skipping_unreadable``.

    Caveat: reads from the offset to the end into memory at once.
    """
    lines, offset = _log_lines(path, start_offset)
    records: list[dict[str, Any]] = []
    for where, line in lines:
        try:
            records.append(parse_log_line(line))
        except ValueError as exc:
            raise ValueError(f"{where} {exc}") from None
    return records, offset


def read_log_skipping_unreadable(path: Path, *, start_offset: int = 0) -> tuple[list[dict[str, Any]], int, int]:
    """As ``read_log``, but a whole line that cannot be used (not UTF-8, not a JSON object, or a
    record ``window_stats`` refuses: see ``record_problem``) is skipped, counted and logged at
    WARNING, so that one corrupted line (a crash mid-write, a disk error) never hides the rest of
    the log. Returns the records, the offset after the last whole line and the number of lines
    skipped. Still raises ValueError for an offset past the end or not at the start of a line."""
    lines, offset = _log_lines(path, start_offset)
    records: list[dict[str, Any]] = []
    unreadable = 0
    for where, line in lines:
        try:
            record = parse_log_line(line)
        except ValueError as exc:
            problem: str | None = f"{where} {exc}"
        else:
            problem = record_problem(record)
            if problem is None:
                records.append(record)
                continue
            problem = f"{where}: {problem}"
        unreadable += 1
        logger.warning("skipped an unreadable inference log line: %.300s", problem)
    return records, offset, unreadable


# --- summary -------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(windows: Sequence[WindowStats]) -> dict[str, Any]:
    """A JSON-serialisable view of ``windows`` and their drift, for the API (times ISO 8601 UTC)."""
    drifts = drift_series(windows)
    baseline_index = _baseline(windows)
    return {
        "window_s": int((windows[0].end - windows[0].start).total_seconds()) if windows else None,
        "prompt_chars_bins": list(PROMPT_CHAR_BIN_LABELS),
        "drift_thresholds": {"moderate": PSI_MODERATE, "significant": PSI_SIGNIFICANT},
        "baseline_start": None if baseline_index is None else _iso(windows[baseline_index].start),
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


# --- SVG -----------------------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_FONT = 'font-family="sans-serif"'
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_BOTTOM = 60, 16, 30
# Characters that XML 1.0 does not allow, even escaped: replaced so that the SVG always parses.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: object) -> str:
    """Text safe in an XML element or a double-quoted attribute."""
    return _xml_escape(_XML_INVALID.sub("\ufffd", str(value)), {'"': "&quot;"})


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _check_size(width: int, height: int) -> None:
    if width < 200 or height < 120:
        raise ValueError(f"a chart needs at least 200 x 120 pixels, not {width} x {height}")


def _nice_ticks(low: float, high: float, count: int = 5) -> tuple[list[float], int]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten), and the
    number of decimals their labels need."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(multiple * power for multiple in (1, 2, 5, 10) if multiple * power >= raw)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(index * step, decimals) for index in range(first, last + 1)], decimals


def _header(width: int, height: int, title: str, names: Sequence[str]) -> tuple[list[str], int]:
    """The opening of a chart (background, title, legend) and the y of the plot's top."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_text(title)}">',
        f"<title>{_text(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_MARGIN_LEFT}" y="16" {_FONT} font-size="13" font-weight="bold">{_text(title)}</text>',
    ]
    x, y = _MARGIN_LEFT, 24
    for index, name in enumerate(names):
        item_width = 14 + 6.5 * len(name) + 14  # an estimate: no font metrics without a renderer
        if x > _MARGIN_LEFT and x + item_width > width - _MARGIN_RIGHT:
            x, y = _MARGIN_LEFT, y + 14
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{_num(x)}" y="{y}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{_num(x + 14)}" y="{y + 9}" {_FONT} font-size="11">{_text(name)}</text>')
        x += item_width
    return parts, y + 20 if names else y + 6


def _y_axis(
    parts: list[str],
    ticks: list[float],
    decimals: int,
    scale: Callable[[float], float] | None,
    box: tuple[int, int, int, int],
    y_label: str,
) -> None:
    left, right, top, bottom = box
    for tick in ticks:
        assert scale is not None
        y = scale(tick)
        parts.append(f'<line x1="{left}" y1="{_num(y)}" x2="{right}" y2="{_num(y)}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{left - 4}" y="{_num(y + 3.5)}" {_FONT} font-size="10" text-anchor="end">'
            f"{_text(f'{tick:,.{decimals}f}')}</text>"
        )
    middle = (top + bottom) / 2
    parts.append(
        f'<text x="12" y="{_num(middle)}" {_FONT} font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {_num(middle)})">{_text(y_label)}</text>'
    )
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333333"/>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333333"/>')


def _no_data(parts: list[str], left: int, right: int, top: int, bottom: int) -> None:
    parts.append(
        f'<text x="{_num((left + right) / 2)}" y="{_num((top + bottom) / 2)}" {_FONT} font-size="12" '
        f'text-anchor="middle" fill="#777777">no data</text>'
    )


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

    One line per series, in the mapping's order, colours from ``PALETTE``; a ``None`` value breaks
    its line (a point with no neighbour is drawn as a dot). The y axis starts at 0 unless a value is
    negative; time ticks are labelled in UTC. Every text is XML-escaped; the output depends only on
    the arguments. Raises ValueError for a naive datetime, a non-finite value or a chart smaller
    than 200 x 120. Caveat: the legend's layout estimates text widths (no font metrics).
    """
    _check_size(width, height)
    points: dict[str, list[tuple[float, float | None]]] = {}
    for name, values in series.items():
        converted = []
        for moment, value in values:
            if value is not None and not math.isfinite(value):
                raise ValueError(f"series {name!r}: value {value!r} is not finite")
            converted.append(((parse_time(moment) - _EPOCH).total_seconds(), value))
        points[name] = sorted(converted, key=lambda point: point[0])
    parts, top = _header(width, height, title, list(points))
    left, right, bottom = _MARGIN_LEFT, width - _MARGIN_RIGHT, height - _MARGIN_BOTTOM

    times = [t for values in points.values() for t, _ in values]
    numbers = [v for values in points.values() for _, v in values if v is not None]
    if not times or not numbers:
        _y_axis(parts, [], 0, None, (left, right, top, bottom), y_label)
        _no_data(parts, left, right, top, bottom)
        parts.append("</svg>")
        return "\n".join(parts)

    ticks, decimals = _nice_ticks(min(0.0, min(numbers)), max(numbers))
    y_low, y_high = ticks[0], ticks[-1]
    t_low, t_high = min(times), max(times)

    def x_of(t: float) -> float:
        return (left + right) / 2 if t_high == t_low else left + (t - t_low) / (t_high - t_low) * (right - left)

    def y_of(v: float) -> float:
        return bottom - (v - y_low) / (y_high - y_low) * (bottom - top)

    _y_axis(parts, ticks, decimals, y_of, (left, right, top, bottom), y_label)
    tick_count = 1 if t_high == t_low else 5
    time_format = _time_format(t_high - t_low)
    for index in range(tick_count):
        t = t_low if tick_count == 1 else t_low + (t_high - t_low) * index / (tick_count - 1)
        x = x_of(t)
        label = (_EPOCH + timedelta(seconds=t)).strftime(time_format)
        # the end ticks' labels are anchored inwards so that they stay inside the chart
        anchor = "middle"
        if tick_count > 1 and index in (0, tick_count - 1):
            anchor = "start" if index == 0 else "end"
        parts.append(f'<line x1="{_num(x)}" y1="{bottom}" x2="{_num(x)}" y2="{bottom + 4}" stroke="#333333"/>')
        parts.append(
            f'<text x="{_num(x)}" y="{bottom + 15}" {_FONT} font-size="10" text-anchor="{anchor}">{_text(label)}</text>'
        )
    parts.append(
        f'<text x="{_num(right)}" y="{height - 3}" {_FONT} font-size="10" text-anchor="end" fill="#777777">UTC</text>'
    )

    for index, values in enumerate(points.values()):
        color = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for t, v in values:
            if v is None:
                if runs[-1]:
                    runs.append([])
            else:
                runs[-1].append((x_of(t), y_of(v)))
        for run in runs:
            if len(run) == 1:
                x, y = run[0]
                parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{color}"/>')
            elif run:
                coordinates = " ".join(f"{_num(x)},{_num(y)}" for x, y in run)
                parts.append(
                    f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="1.5" '
                    f'stroke-linejoin="round"/>'
                )
    parts.append("</svg>")
    return "\n".join(parts)


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
    then stays at zero. Every text is XML-escaped; the output depends only on the arguments.
    Raises ValueError for a series of the wrong length, a negative or non-finite value, or a chart
    smaller than 200 x 120.
    """
    _check_size(width, height)
    values: dict[str, list[float]] = {}
    for name, counts in series.items():
        if len(counts) != len(labels):
            raise ValueError(f"series {name!r} has {len(counts)} values for {len(labels)} labels")
        if any(not math.isfinite(count) or count < 0 for count in counts):
            raise ValueError(f"series {name!r} has a negative or non-finite value")
        total = sum(counts)
        values[name] = [count / total if normalise and total else float(count) for count in counts]
    parts, top = _header(width, height, title, list(values))
    left, right, bottom = _MARGIN_LEFT, width - _MARGIN_RIGHT, height - _MARGIN_BOTTOM
    numbers = [v for counts in values.values() for v in counts]
    if not labels or not numbers:
        _y_axis(parts, [], 0, None, (left, right, top, bottom), y_label)
        _no_data(parts, left, right, top, bottom)
        parts.append("</svg>")
        return "\n".join(parts)

    ticks, decimals = _nice_ticks(0.0, max(numbers))
    y_high = ticks[-1]

    def y_of(v: float) -> float:
        return bottom - v / y_high * (bottom - top)

    _y_axis(parts, ticks, decimals, y_of, (left, right, top, bottom), y_label)
    group_width = (right - left) / len(labels)
    bar_width = group_width * 0.8 / len(values)
    for group, label in enumerate(labels):
        center = left + group_width * (group + 0.5)
        parts.append(
            f'<text x="{_num(center)}" y="{bottom + 15}" {_FONT} font-size="10" text-anchor="middle">'
            f"{_text(label)}</text>"
        )
        for index, counts in enumerate(values.values()):
            x = left + group_width * group + group_width * 0.1 + bar_width * index
            y = y_of(counts[group])
            parts.append(
                f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(bar_width)}" height="{_num(bottom - y)}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)
