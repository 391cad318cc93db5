"""Windowed statistics of inference log records: requests, errors, latency percentiles, prompt
lengths and guard hits per fixed window (definitions in ``serving.monitoring``)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Lower edges of the prompt-length bins, in characters: [0, 32), [32, 64), ..., [2048, 4096),
# [4096, inf). Powers of two because prompt lengths spread over orders of magnitude; the last bin
# is open so that every prompt has a bin whatever the deployment's max_prompt_chars.
PROMPT_CHAR_BINS: tuple[int, ...] = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PROMPT_CHAR_BIN_LABELS: tuple[str, ...] = tuple(
    [f"{low}-{high - 1}" for low, high in itertools.pairwise(PROMPT_CHAR_BINS)] + [f"≥{PROMPT_CHAR_BINS[-1]}"]
)

GUARD_HIT_ACTIONS: tuple[str, ...] = ("redacted", "blocked")  # least to most severe
LATENCY_PERCENTILES: tuple[int, ...] = (50, 95, 99)

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
