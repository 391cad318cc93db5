"""Reading dataset files as records: JSONL, CSV, Parquet and plain text.

Every reader yields ``Record(number, fields)`` where ``number`` is the 1-based line (JSONL, text),
data row (CSV, after the header) or row (Parquet), and ``fields`` maps a field name (dotted for
nested JSON) to its text. A malformed file raises ``RecordError`` naming the line and the fault.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
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


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecordError("not valid UTF-8", line=line) from None


def _jsonl(data: bytes) -> Iterator[Record]:
    for number, line in enumerate(_decode(data).splitlines(), start=1):
        if not line.strip():
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


def _csv(data: bytes) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(_decode(data), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise RecordError(f"malformed CSV header ({exc})", line=1) from None
    if not header or len(set(header)) != len(header) or any(not name.strip() for name in header):
        raise RecordError("the CSV header needs distinct, non-empty column names", line=1)
    number = 0
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
        if len(row) != len(header):
            raise RecordError(f"{len(row)} fields where the header has {len(header)}", line=reader.line_num)
        yield Record(number, {name: value for name, value in zip(header, row, strict=True) if value})


def _parquet(data: bytes) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise RecordError(f"not a readable Parquet file ({exc})") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        fields: dict[str, str] = {}
        _flatten(row, "", fields)
        yield Record(number, fields)


def _text(data: bytes) -> Iterator[Record]:
    for number, line in enumerate(_decode(data).splitlines(), start=1):
        if line.strip():
            yield Record(number, {"text": line})


READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}


def read_records(data: bytes, fmt: str) -> Iterator[Record]:
    return READERS[fmt](data)


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
