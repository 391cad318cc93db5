"""Reading dataset files as records: JSONL, CSV, Parquet and plain text.

Every reader yields ``Record(number, fields)`` where ``number`` is the 1-based line (JSONL, text),
data row (CSV, after the header) or row (Parquet), and ``fields`` maps a field name (dotted for
nested JSON) to its text. A malformed file raises ``RecordError`` naming the line and the fault.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


class RecordError(ValueError):
    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Record:
    number: int
    fields: dict[str, str]


def format_of(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise RecordError(f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
    elif isinstance(value, str):
        out[prefix or "value"] = value
    elif value is not None and not isinstance(value, bool):
        out[prefix or "value"] = str(value)


class _Raw(io.RawIOBase):
    """Any object with ``read(size)`` (such as ``artifacts.VerifiedReader``) as a raw stream, so
    ``io.BufferedReader`` can split it into lines at C speed. Closing it leaves the source open."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _lines(handle: Any) -> Iterator[str]:
    """The decoded lines, exactly as ``str.splitlines`` of the whole decoded file gives them, one
    physical line at a time (split at ``\n`` first: no UTF-8 sequence holds that byte)."""
    for number, raw in enumerate(io.BufferedReader(_Raw(handle), 1 << 20), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise RecordError("not valid UTF-8", line=number) from None
        yield from text.splitlines()


# How a text stream opened with ``newline=""`` splits lines (what ``csv`` expects).
_CSV_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _csv_lines(handle: Any) -> Iterator[str]:
    for number, raw in enumerate(io.BufferedReader(_Raw(handle), 1 << 20), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise RecordError("not valid UTF-8", line=number) from None
        yield from _CSV_LINE.findall(text)


def _jsonl(handle: Any, skip: int) -> Iterator[Record]:
    position = 0
    for number, line in enumerate(_lines(handle), start=1):
        if not line.strip():
            continue
        position += 1
        if position <= skip:  # another shard's record: counted, not parsed
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not JSON ({exc.msg} at column {exc.colno})", line=number) from None
        if not isinstance(value, dict):
            raise RecordError("a JSONL record must be a JSON object", line=number)
        fields: dict[str, str] = {}
        _flatten(value, "", fields)
        yield Record(number, fields)


def _csv(handle: Any, skip: int) -> Iterator[Record]:
    reader = csv.reader(_csv_lines(handle), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise RecordError(f"malformed CSV header ({exc})", line=1) from None
    if not header or len(set(header)) != len(header) or any(not name.strip() for name in header):
        raise RecordError("the CSV header needs distinct, non-empty column names", line=1)
    number = position = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise RecordError(f"malformed CSV ({exc})", line=reader.line_num) from None
        number += 1
        if not row:
            continue
        position += 1
        if position <= skip:
            continue
        if len(row) != len(header):
            raise RecordError(f"{len(row)} fields where the header has {len(header)}", line=reader.line_num)
        yield Record(number, {name: value for name, value in zip(header, row, strict=True) if value})


def _parquet(handle: Any, skip: int) -> Iterator[Record]:
    """Row group by row group (whole groups before ``skip`` are not read): memory holds a batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
        groups, offset = [], 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if offset + rows > skip or groups:
                groups.append(group)
            else:
                offset += rows
        batches = parquet.iter_batches(batch_size=10_000, row_groups=groups) if groups else iter(())
        number = offset
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                if number <= skip:
                    continue
                fields: dict[str, str] = {}
                _flatten(row, "", fields)
                yield Record(number, fields)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RecordError(f"not a readable Parquet file ({exc})") from None


def _text(handle: Any, skip: int) -> Iterator[Record]:
    position = 0
    for number, line in enumerate(_lines(handle), start=1):
        if line.strip():
            position += 1
            if position > skip:
                yield Record(number, {"text": line})


_STREAMS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}


def iter_records(handle: Any, fmt: str, *, start: int = 0, stop: int | None = None) -> Iterator[Record]:
    """The records of an open file, read as a stream: memory holds one line (JSONL, CSV, text) or
    one batch of rows (Parquet), whatever the file's size. ``handle`` needs only ``read(size)``
    (Parquet: a seekable file). ``start``/``stop`` select records by position (0-based, in file
    order, as a slice does); those before ``start`` are skipped cheaply (JSONL and text lines are
    counted, not parsed; Parquet row groups are not read), and are not checked either."""
    records = _STREAMS[fmt](handle, start)
    return records if stop is None else itertools.islice(records, max(0, stop - start))


def read_records(data: bytes, fmt: str) -> Iterator[Record]:
    return iter_records(io.BytesIO(data), fmt)


# Readers of a whole file's bytes, by format.
READERS = {fmt: functools.partial(read_records, fmt=fmt) for fmt in _STREAMS}


def record_key(record: Record) -> str:
    """A hash of the record's normalised content: equal records (fields in any order, surrounding
    whitespace and case aside) have equal keys."""
    normalised = sorted((name, " ".join(value.split()).casefold()) for name, value in record.fields.items())
    return hashlib.sha256(json.dumps(normalised, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Quality:
    records: int
    duplicates: int

    @property
    def duplicate_share(self) -> float:
        return self.duplicates / self.records if self.records else 0.0


def quality_of(data: bytes, fmt: str) -> Quality:
    """Parse every record (raising ``RecordError`` on the first malformed one) and count exact
    duplicates by normalised-record hash."""
    seen: set[str] = set()
    records = duplicates = 0
    for record in read_records(data, fmt):
        records += 1
        key = record_key(record)
        if key in seen:
            duplicates += 1
        else:
            seen.add(key)
    if records == 0:
        raise RecordError("the file holds no record")
    return Quality(records=records, duplicates=duplicates)
