"""The offline verifier on malformed bundles: every defect is named in one ``FAIL`` line with
exit status 1, never a traceback; and the readable copy of an entry must be the hashed bytes'
value exactly, types included."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from audits import verify
from audits.ledger.services import checkpoint_create
from audits.ledger.tests.test_verify import export

pytestmark = pytest.mark.django_db


@pytest.fixture
def bundle(append: Callable[..., object], tmp_path: Path) -> Path:
    append(6)
    checkpoint_create()
    return export(tmp_path, "pristine")


def _note(bundle: Path) -> Path:
    return sorted((bundle / "checkpoints").glob("*.note"))[0]


def _rewrite_note_line(number: int, change: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        lines = _note(bundle).read_text().split("\n")
        lines[number] = change(lines[number])
        _note(bundle).write_text("\n".join(lines))

    return apply


def _rewrite_entry(change: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        lines = (bundle / "entries.jsonl").read_text().splitlines()
        lines[2] = json.dumps(change(json.loads(lines[2])))
        (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")

    return apply


def _retype(record: dict[str, object]) -> dict[str, object]:
    entry = dict(record["entry"])  # type: ignore[arg-type]
    entry["index"] = float(entry["index"])  # type: ignore[arg-type]  # 2.0 == 2 for Python
    return {**record, "entry": entry}


def _nest(record: dict[str, object]) -> dict[str, object]:
    return {**record, "entry": "NEST"}


def _deep(bundle: Path) -> None:
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"NEST"', "[" * 100_000 + "]" * 100_000)
    (bundle / "entries.jsonl").write_text("\n".join(lines) + "\n")


def _append_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        with (bundle / name).open("ab") as handle:
            handle.write(data)

    return apply


MALFORMED: dict[str, tuple[list[Callable[[Path], None]], str]] = {
    "size in superscript digits": ([_rewrite_note_line(1, lambda _: "²")], "the tree size '²' is not a decimal number"),
    "root with a non-ASCII character": ([_rewrite_note_line(2, lambda line: "é" + line[1:])], "is not base64"),
    "signature with a non-ASCII character": ([_rewrite_note_line(4, lambda line: line[:-1] + "é")], "is not base64"),
    "an entries line that is not UTF-8": (
        [_append_bytes("entries.jsonl", b'{"index": 9, "\xff": 1}\n')],
        "entries.jsonl line 7: not an entry record",
    ),
    "keys.txt that is not UTF-8": ([_append_bytes("keys.txt", b"\xff\xfe\n")], "keys.txt: not UTF-8 text"),
    "a note that is not UTF-8": ([lambda b: _note(b).write_bytes(_note(b).read_bytes() + b"\xff")], "not UTF-8 text"),
    "bundle.json that is not JSON": ([lambda b: (b / "bundle.json").write_text("{origin")], "bundle.json: not JSON"),
    "bundle.json that is a list": ([lambda b: (b / "bundle.json").write_text("[1]")], "bundle.json: not an object"),
    "a readable copy nested past the parser's depth": ([_rewrite_entry(_nest), _deep], "entries.jsonl line 3"),
    "a readable copy of another type": ([_rewrite_entry(_retype)], "the decoded copy differs from the hashed bytes"),
    "a folder where a file belongs": (
        [lambda b: (b / "keys.txt").unlink(), lambda b: (b / "keys.txt").mkdir()],
        "keys.txt: cannot be read",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_bundle_fails_with_its_defect_named(
    bundle: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify.main([str(bundle)]) == 0  # the pristine bundle verifies
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    changes, named = MALFORMED[case]
    for change in changes:
        change(broken)
    capsys.readouterr()
    assert verify.main([str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAIL ") and named in err and "Traceback" not in err, err
