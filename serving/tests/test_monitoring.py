"""Deployment monitoring: windows, percentiles, drift, the log reader and the SVG charts. No database."""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from serving.monitoring import (
    PROMPT_CHAR_BIN_LABELS,
    PROMPT_CHAR_BINS,
    PSI_EPSILON,
    drift,
    drift_level,
    drift_series,
    percentile_nearest_rank,
    prompt_chars_bin,
    read_log,
    summary,
    svg_bar_chart,
    svg_line_chart,
    window_stats,
)

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def parse_svg(text: str) -> ET.Element:
    """The chart as XML: it must parse (our own output, so the stdlib parser is fine here)."""
    return ET.fromstring(text)  # noqa: S314


def stamp(moment: datetime) -> str:
    """A time as the model server writes it."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(
    seconds: float,
    *,
    status: int = 200,
    latency_ms: float = 10.0,
    prompt_chars: int | None = 100,
    guard: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An inference log line shaped as ``ModelServer.complete`` writes it."""
    return {
        "time": stamp(T0 + timedelta(seconds=seconds)),
        "request_id": request_id or f"r-{seconds}",
        "deployment": "d-1",
        "environment": "staging",
        "grant_id": "g-1",
        "model_digest": "sha256:" + "0" * 64,
        "input_sha256": None if prompt_chars is None else "1" * 64,
        "output_sha256": "2" * 64 if status == 200 else None,
        "prompt_chars": prompt_chars,
        "max_tokens": 16,
        "guard": guard if guard is not None else {},
        "status": status,
        "error": None if status == 200 else "some_error",
        "latency_ms": latency_ms,
    }


def side(action: str, **entities: int) -> dict[str, Any]:
    return {"action": action, "entities": entities}


# --- percentiles, rates, bins ------------------------------------------------------------------------


def test_percentiles_by_nearest_rank() -> None:
    ten = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile_nearest_rank(ten, 50) == 5.0  # rank ceil(5.0) = 5
    assert percentile_nearest_rank(ten, 95) == 10.0  # rank ceil(9.5) = 10
    assert percentile_nearest_rank(ten, 99) == 10.0
    twenty = [float(v) for v in range(1, 21)]
    assert percentile_nearest_rank(twenty, 50) == 10.0  # rank 10
    assert percentile_nearest_rank(twenty, 95) == 19.0  # rank ceil(19.0) = 19
    assert percentile_nearest_rank(twenty, 99) == 20.0  # rank ceil(19.8) = 20
    hundred = [float(v) for v in range(1, 101)]
    assert percentile_nearest_rank(hundred, 99) == 99.0
    assert percentile_nearest_rank([7.5], 50) == 7.5
    assert percentile_nearest_rank([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        percentile_nearest_rank(ten, 0)


def test_window_counts_rates_and_latency() -> None:
    records = [
        record(1, latency_ms=40.0),
        record(2, latency_ms=10.0),
        record(3, status=503, latency_ms=30.0),
        record(4, status=422, latency_ms=20.0),
    ]
    [window] = window_stats(records, window_s=60)
    assert (window.start, window.end) == (T0, T0 + timedelta(seconds=60))
    assert (window.requests, window.errors, window.client_errors) == (4, 1, 1)
    assert window.error_rate == 0.25
    assert window.client_error_rate == 0.25
    # sorted 10, 20, 30, 40: p50 is rank 2, p95 and p99 rank 4
    assert (window.latency_p50_ms, window.latency_p95_ms, window.latency_p99_ms) == (20.0, 40.0, 40.0)


def test_histogram_bins_at_their_edges() -> None:
    assert PROMPT_CHAR_BINS[0] == 0 and PROMPT_CHAR_BINS[-1] == 4096
    assert PROMPT_CHAR_BIN_LABELS[:3] == ("0-31", "32-63", "64-127")
    assert PROMPT_CHAR_BIN_LABELS[-1] == "≥4096"
    assert [prompt_chars_bin(n) for n in (0, 31, 32, 63, 64)] == [0, 0, 1, 1, 2]
    assert [prompt_chars_bin(n) for n in (4095, 4096, 10**6)] == [7, 8, 8]
    with pytest.raises(ValueError):
        prompt_chars_bin(-1)

    lengths = [0, 31, 32, 4095, 4096, None]
    [window] = window_stats([record(i, prompt_chars=n) for i, n in enumerate(lengths)], window_s=60)
    assert window.prompt_chars_histogram == (2, 1, 0, 0, 0, 0, 0, 1, 1)
    assert window.prompt_chars_unknown == 1


def test_empty_windows_between_records_and_alignment() -> None:
    # first record at 10:00:30: floored to the minute; the next at 10:03:00 (a window edge)
    windows = window_stats([record(180), record(30), record(59.999)], window_s=60)
    assert [w.start for w in windows] == [T0 + timedelta(minutes=m) for m in range(4)]
    assert [w.requests for w in windows] == [2, 0, 0, 1]
    empty = windows[1]
    assert (empty.errors, empty.error_rate, empty.latency_p50_ms, empty.guard_hit_rate) == (0, None, None, None)
    assert empty.prompt_chars_histogram == (0,) * len(PROMPT_CHAR_BINS)

    # anchored at an explicit start: leading empty windows, on its grid
    anchored = window_stats([record(100)], window_s=60, start=T0 - timedelta(seconds=30))
    assert [w.requests for w in anchored] == [0, 0, 1]
    assert anchored[-1].start == T0 + timedelta(seconds=90)
    with pytest.raises(ValueError, match="precedes start"):
        window_stats([record(0)], window_s=60, start=T0 + timedelta(seconds=1))
    assert window_stats([], window_s=60) == []
    with pytest.raises(ValueError, match="window_s"):
        window_stats([record(0)], window_s=0)


def test_guard_hits_by_action_and_entity() -> None:
    records = [
        record(1, guard={"prompt": side("allowed")}),
        record(2, guard={"prompt": side("redacted", EMAIL_ADDRESS=2), "completion": side("allowed")}),
        record(
            3,
            status=422,
            guard={"prompt": side("redacted", PHONE_NUMBER=1), "completion": side("blocked", CREDIT_CARD=1)},
        ),
        record(4, status=422, guard={"prompt": side("blocked", EMAIL_ADDRESS=1, CREDIT_CARD=1)}),
        record(5, status=400, prompt_chars=None),  # refused before the guard: no side at all
    ]
    [window] = window_stats(records, window_s=60)
    assert window.guard_hits == 3
    assert window.guard_hit_rate == 3 / 5
    assert window.guard_hits_by_action == {"redacted": 1, "blocked": 2}
    assert window.guard_hits_by_entity == {"CREDIT_CARD": 2, "EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1}
    assert window.client_errors == 3


def test_feedback_counts_in_the_window_of_the_rated_request() -> None:
    records = [record(10, request_id="a"), record(70, request_id="b")]
    feedback = [
        {"time": T0 + timedelta(seconds=500), "request_id": "a", "rating": 5},  # late, but rates window 0
        {"time": T0 + timedelta(seconds=65), "request_id": "a", "rating": 2},
        {"time": T0 + timedelta(seconds=200), "request_id": "unknown", "rating": 4},  # placed by its own time
    ]
    windows = window_stats(records, window_s=60, feedback=feedback)
    assert [(w.feedback_count, w.feedback_mean_rating) for w in windows] == [(2, 3.5), (0, None), (0, None), (1, 4.0)]
    assert window_stats(records, window_s=60)[0].feedback_count == 0
    with pytest.raises(ValueError, match="rating"):
        window_stats(records, window_s=60, feedback=[{"time": T0, "request_id": "a", "rating": 6}])


def test_malformed_records_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        window_stats([{**record(0), "time": "2025-03-01T10:00:00"}], window_s=60)
    with pytest.raises(ValueError, match="status"):
        window_stats([{**record(0), "status": "200"}], window_s=60)
    with pytest.raises(ValueError, match="latency_ms"):
        window_stats([{**record(0), "latency_ms": -1}], window_s=60)
    with pytest.raises(ValueError, match="latency_ms"):
        window_stats([{**record(0), "latency_ms": float("inf")}], window_s=60)


# --- drift -------------------------------------------------------------------------------------------


def test_psi_known_values() -> None:
    assert drift([10, 20, 30], [10, 20, 30]) == 0.0
    assert drift([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-15)  # same shares
    # shares (0.5, 0.5) -> (0.25, 0.75): -0.25 * ln 0.5 + 0.25 * ln 1.5 = 0.25 * ln 3
    assert abs(drift([50, 50], [25, 75]) - 0.25 * math.log(3)) < 1e-9
    assert abs(drift([50, 50], [25, 75]) - 0.27465307216702745) < 1e-9
    # an empty reference bin takes PSI_EPSILON: (0.5 - 1) ln(0.5 / 1) + (0.5 - 1e-4) ln(0.5 / 1e-4)
    expected = -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert PSI_EPSILON == 1e-4
    assert abs(drift([10, 0], [5, 5]) - expected) < 1e-9
    assert abs(drift([10, 0], [5, 5]) - 4.60431846666895) < 1e-9
    assert drift([10, 0, 0], [5, 5, 0]) == drift([10, 0], [5, 5])  # empty on both sides adds nothing
    with pytest.raises(ValueError, match="bins"):
        drift([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        drift([0, 0], [1, 2])


def test_drift_levels() -> None:
    assert drift_level(0.0) == "stable"
    assert drift_level(0.0999) == "stable"
    assert drift_level(0.1) == "moderate"
    assert drift_level(0.25) == "moderate"
    assert drift_level(0.2501) == "significant"
    with pytest.raises(ValueError):
        drift_level(float("nan"))
    with pytest.raises(ValueError):
        drift_level(-0.1)


def test_drift_series_against_the_first_window_with_requests() -> None:
    records = [
        *[record(60 + i, prompt_chars=10) for i in range(2)],
        *[record(120 + i, prompt_chars=40) for i in range(1)],
        *[record(121, prompt_chars=10, guard={"prompt": side("redacted", EMAIL_ADDRESS=1)})],
        *[record(240, prompt_chars=10)],
    ]
    windows = window_stats(records, window_s=60, start=T0)
    series = drift_series(windows)
    assert [w.requests for w in windows] == [0, 2, 2, 0, 1]
    assert series[0].prompt_chars_psi is None  # before the baseline
    assert series[1].prompt_chars_psi == 0.0 and series[1].prompt_chars_drift_level == "stable"
    # (1, 0) -> (0.5, 0.5), with epsilon for the empty reference bin
    expected = -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert abs(series[2].prompt_chars_psi - expected) < 1e-9  # type: ignore[operator]
    assert series[2].prompt_chars_drift_level == "significant"
    assert series[2].guard_hit_rate_delta == 0.5
    assert series[3].prompt_chars_psi is None and series[3].guard_hit_rate_delta is None  # empty window
    assert series[4].prompt_chars_psi == 0.0 and series[4].guard_hit_rate_delta == 0.0


def lognormal_length(rng: random.Random, median: float) -> int:
    return max(1, int(rng.lognormvariate(math.log(median), 0.6)))


def synthetic_stream(seed: int = 7) -> list[dict[str, Any]]:
    """Twelve hours, 400 requests an hour, prompt lengths log-normal (sigma 0.6) with a median of
    200 characters for six hours, then 260 for three (a small shift), then 400 (a large one). Some
    errors, guard hits and client errors throughout."""
    rng = random.Random(seed)  # noqa: S311  (synthetic data, seeded for a reproducible test)
    records = []
    for hour in range(12):
        median = 200 if hour < 6 else 260 if hour < 9 else 400
        for index in range(400):
            seconds = hour * 3600 + rng.uniform(0, 3599.999)
            roll = rng.random()
            status = 503 if roll < 0.01 else 422 if roll < 0.04 else 400 if roll < 0.05 else 200
            guard: dict[str, Any] = {"prompt": side("allowed")}
            if status == 422:
                guard = {"prompt": side("blocked", CREDIT_CARD=1)}
            elif status == 200 and rng.random() < 0.05:
                guard = {"prompt": side("redacted", EMAIL_ADDRESS=1), "completion": side("allowed")}
            elif status == 400:
                guard = {}
            records.append(
                record(
                    seconds,
                    status=status,
                    latency_ms=round(rng.lognormvariate(math.log(80), 0.4), 2),
                    prompt_chars=None if status == 400 else lognormal_length(rng, median),
                    guard=guard,
                    request_id=f"req-{hour}-{index}",
                )
            )
    rng.shuffle(records)
    return records


def test_realistic_stream_drifts_after_the_shift(tmp_path: Path) -> None:
    records = synthetic_stream()
    log = tmp_path / "inference.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["time"])))
    read, offset = read_log(log)
    assert len(read) == 4800 and offset == log.stat().st_size

    windows = window_stats(read, window_s=3600)
    assert len(windows) == 12 and windows[0].start == T0
    assert sum(w.requests for w in windows) == 4800
    series = drift_series(windows)
    psis = [d.prompt_chars_psi for d in series]
    assert all(value is not None for value in psis)
    assert psis[0] == 0.0
    assert all(value < 0.1 for value in psis[1:6]), psis  # type: ignore[operator]
    assert all(value > 0.25 for value in psis[9:]), psis  # type: ignore[operator]
    assert [d.prompt_chars_drift_level for d in series[:6]] == ["stable"] * 6
    assert [d.prompt_chars_drift_level for d in series[9:]] == ["significant"] * 3
    # the small shift sits in between, on average (a single window of 400 is noisy)
    mean = [sum(psis[a:b]) / (b - a) for a, b in ((1, 6), (6, 9), (9, 12))]  # type: ignore[arg-type]
    assert mean[0] < mean[1] < mean[2], psis
    for window in windows:
        assert 0 < window.latency_p50_ms <= window.latency_p95_ms <= window.latency_p99_ms  # type: ignore[operator]

    payload = summary(windows)
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text) == payload
    assert payload["window_s"] == 3600
    assert payload["baseline_start"] == "2025-03-01T10:00:00.000Z"
    assert payload["prompt_chars_bins"] == list(PROMPT_CHAR_BIN_LABELS)
    first, last = payload["windows"][0], payload["windows"][-1]
    assert first["start"] == "2025-03-01T10:00:00.000Z" and first["end"] == "2025-03-01T11:00:00.000Z"
    assert set(first) == {
        "start", "end", "requests", "errors", "error_rate", "client_errors", "client_error_rate",
        "latency_ms", "prompt_chars", "guard", "feedback", "drift",
    }  # fmt: skip
    assert set(first["guard"]["by_action"]) == {"redacted", "blocked"}
    assert last["drift"]["level"] == "significant"
    assert last["drift"]["prompt_chars_psi"] == series[-1].prompt_chars_psi

    # the charts of a real series parse, and are deterministic
    chart = svg_line_chart(
        {
            "p50": [(w.start, w.latency_p50_ms) for w in windows],
            "p95": [(w.start, w.latency_p95_ms) for w in windows],
            "psi": [(d.start, d.prompt_chars_psi) for d in series],
        },
        title="Latency and drift",
        y_label="ms",
    )
    parse_svg(chart)
    assert chart == svg_line_chart(
        {
            "p50": [(w.start, w.latency_p50_ms) for w in windows],
            "p95": [(w.start, w.latency_p95_ms) for w in windows],
            "psi": [(d.start, d.prompt_chars_psi) for d in series],
        },
        title="Latency and drift",
        y_label="ms",
    )
    bars = svg_bar_chart(
        {"baseline": windows[0].prompt_chars_histogram, "last hour": windows[-1].prompt_chars_histogram},
        title="Prompt length",
        y_label="share",
        normalise=True,
    )
    parse_svg(bars)


def test_summary_of_nothing() -> None:
    payload = summary([])
    assert payload["windows"] == [] and payload["window_s"] is None and payload["baseline_start"] is None
    json.dumps(payload, allow_nan=False)


# --- the log reader ----------------------------------------------------------------------------------


def test_read_log_skips_a_torn_last_line_and_resumes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "inference.log"
    lines = [json.dumps(record(i)) + "\n" for i in range(3)]
    torn = json.dumps(record(3))
    log.write_text(lines[0] + lines[1] + lines[2] + torn[:25])

    with caplog.at_level(logging.INFO, logger="serving.monitoring"):
        records, offset = read_log(log)
    assert [r["request_id"] for r in records] == ["r-0", "r-1", "r-2"]
    assert offset == len("".join(lines).encode())
    assert "partial last line (25 bytes" in caplog.text

    with log.open("a") as handle:  # the writer finishes its line and writes another
        handle.write(torn[25:] + "\n" + json.dumps(record(4)) + "\n")
    more, end = read_log(log, start_offset=offset)
    assert [r["request_id"] for r in more] == ["r-3", "r-4"]
    assert end == log.stat().st_size
    assert read_log(log, start_offset=end) == ([], end)

    with pytest.raises(ValueError, match="start of a line"):
        read_log(log, start_offset=offset + 1)
    with pytest.raises(ValueError, match="past the end"):
        read_log(log, start_offset=end + 1)


def test_read_log_names_a_malformed_line(tmp_path: Path) -> None:
    log = tmp_path / "inference.log"
    good = json.dumps(record(0)) + "\n"
    log.write_text(good + good + '{"time": "2025-03-01T10:00:00.000Z", "status": 2\n' + good)
    with pytest.raises(ValueError, match=r"line 3 \(byte \d+\) is not JSON"):
        read_log(log)
    # counted from the offset given
    with pytest.raises(ValueError, match="line 2 "):
        read_log(log, start_offset=len(good))
    log.write_text(good + "[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 2 .* not a JSON object"):
        read_log(log)
    log.write_bytes(good.encode() + b"\xff\xfe\n")
    with pytest.raises(ValueError, match=r"line 2 .* not UTF-8"):
        read_log(log)


# --- SVG -----------------------------------------------------------------------------------------------


def test_line_chart_is_well_formed_with_axes_legend_and_gaps() -> None:
    times = [T0 + timedelta(hours=h) for h in range(6)]
    chart = svg_line_chart(
        {"error rate": list(zip(times, [0.0, 0.1, None, 0.3, 0.2, None], strict=True)), "lonely": [(times[2], 0.05)]},
        title="Errors",
        y_label="rate",
    )
    root = parse_svg(chart)
    assert root.tag == f"{SVG}svg" and root.get("width") == "640" and root.get("height") == "240"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Errors" in texts and "rate" in texts and "error rate" in texts and "lonely" in texts
    assert "0.00" in texts and "0.30" in texts  # y ticks
    assert "10:00" in texts and "15:00" in texts and "time (UTC)" in texts  # x ticks, UTC
    # the None at 12:00 breaks the line into (10, 11) and (13, 14)
    polylines = [p for p in root.iter(f"{SVG}polyline") if ", " in p.get("points", "")]
    assert [len(p.get("points", "").split(", ")) for p in polylines] == [2, 2]
    assert len(list(root.iter(f"{SVG}circle"))) == 1  # the lonely point
    assert "<script" not in chart and "href" not in chart and " id=" not in chart


def test_charts_escape_every_text() -> None:
    hostile = '<script>alert("x")</script> & more'
    line = svg_line_chart({hostile: [(T0, 1.0), (T0 + timedelta(minutes=1), 2.0)]}, title=hostile, y_label=hostile)
    bar = svg_bar_chart({hostile: [1, 2]}, labels=[hostile, "ok\x00"], title=hostile, y_label=hostile)
    for chart in (line, bar):
        assert "<script" not in chart
        assert "&lt;script&gt;" in chart
        root = parse_svg(chart)
        assert root.find(f"{SVG}title").text == hostile  # type: ignore[union-attr]
        assert root.get("aria-label") == hostile
        assert not list(root.iter(f"{SVG}script"))


def test_bar_chart_of_a_histogram() -> None:
    counts = (5, 0, 10, 0, 0, 0, 0, 0, 1)
    chart = svg_bar_chart({"window": counts}, title="Prompt length", y_label="requests")
    root = parse_svg(chart)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert list(PROMPT_CHAR_BIN_LABELS) == [t for t in texts if t in PROMPT_CHAR_BIN_LABELS]
    # one bar per non-empty bin, left to right, then the legend's swatch
    bars = [(float(r.get("x", "0")), float(r.get("height", "0"))) for r in root.iter(f"{SVG}rect")][:-1]
    heights = [height for _, height in sorted(bars)]
    assert len(heights) == 3 and heights[1] == pytest.approx(2 * heights[0]) == pytest.approx(10 * heights[2])
    assert chart == svg_bar_chart({"window": counts}, title="Prompt length", y_label="requests")
    with pytest.raises(ValueError, match="values for"):
        svg_bar_chart({"window": [1, 2]}, title="t", y_label="y")


def test_charts_without_data() -> None:
    for chart in (
        svg_line_chart({}, title="nothing", y_label="y"),
        svg_line_chart({"a": [(T0, None)]}, title="nothing", y_label="y"),
        svg_bar_chart({}, title="nothing", y_label="y"),
    ):
        root = parse_svg(chart)
        assert "no data" in [t.text for t in root.iter(f"{SVG}text")]
    with pytest.raises(ValueError, match="time zone"):
        svg_line_chart({"a": [(datetime(2025, 1, 1), 1.0)]}, title="t", y_label="y")
    with pytest.raises(ValueError, match="finite"):
        svg_line_chart({"a": [(T0, float("inf"))]}, title="t", y_label="y")


def test_reading_the_log_loads_no_chart_library() -> None:
    code = "import sys, serving.monitoring; print([m for m in ('reportlab', 'PIL', 'matplotlib') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
