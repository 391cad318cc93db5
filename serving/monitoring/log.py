"""Reading the inference log the model server writes: whole lines only (a last line still being
written is left for the next read), each a JSON object, from an offset a caller kept."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from serving.monitoring.windows import record_problem

logger = logging.getLogger(__name__)


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


def segment_summary(data: bytes) -> dict[str, Any]:
    """What the ledger records of a segment of whole log lines: the requests, counted by status and
    by guard side and action, the median (upper) and largest latency, and ``unreadable_lines``: the
    lines that are not a JSON object or that ``window_stats`` would refuse (see
    ``record_problem``), counted apart and never as requests. Blank lines are not counted."""
    statuses: Counter[str] = Counter()
    guard: Counter[str] = Counter()
    latencies = []
    unreadable = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record: dict[str, Any] | None = parse_log_line(line)
        except ValueError:
            record = None
        if record is None or record_problem(record) is not None:
            unreadable += 1
            continue
        statuses[str(record.get("status"))] += 1
        for side, decision in (record.get("guard") or {}).items():
            action = decision.get("action") if isinstance(decision, dict) else decision
            guard[f"{side}:{action}"] += 1
        if isinstance(record.get("latency_ms"), int | float):
            latencies.append(record["latency_ms"])
    latencies.sort()
    return {
        "requests": sum(statuses.values()), "statuses": dict(statuses), "guard": dict(guard),
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_max": latencies[-1] if latencies else None, "unreadable_lines": unreadable,
    }  # fmt: skip
