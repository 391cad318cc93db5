"""Read an exported ledger bundle and verify it: ``verify_bundle(DIR, keys, origin, earlier)``.

A bundle (``manage.py ledger export DIR``) holds ``entries.jsonl`` (each entry's exact hashed bytes,
the leaf hash the server stored and a decoded copy), ``checkpoints/*.note`` (signed checkpoints),
``keys.txt`` (the log's verifier keys) and ``bundle.json`` (its origin). The first fault found
raises ``VerificationFailed`` naming the file, line, entry or checkpoint at fault.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from llmops_ledger_verify.keys import KeyFileError, VerifierKey
from llmops_ledger_verify.replay import VerificationFailed, check_notes, replay


def _same_json(value: object) -> str:
    """A JSON value written so that equal text means the same value, types included (Python's
    ``==`` takes ``true`` for ``1`` and ``1`` for ``1.0``)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def _entries(path: Path) -> Iterator[tuple[int, bytes, bytes | None]]:
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is named, not a traceback
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)  # ValueError covers UnicodeDecodeError and binascii.Error
                index, body = int(record["index"]), base64.b64decode(record["body_b64"], validate=True)
                stored_leaf = (
                    base64.b64decode(record["leaf_hash_b64"], validate=True) if "leaf_hash_b64" in record else None
                )
            except (ValueError, KeyError, TypeError, RecursionError):
                raise VerificationFailed(f"entries.jsonl line {number}", "not an entry record") from None
            try:
                same = _same_json(json.loads(body)) == _same_json(record.get("entry"))
            except (ValueError, RecursionError):
                raise VerificationFailed(f"entry {index}", "its bytes are not JSON") from None
            if not same:
                raise VerificationFailed(f"entry {index}", "the decoded copy differs from the hashed bytes")
            yield index, body, stored_leaf


def _text(path: Path, label: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed(label, "not UTF-8 text") from None
    except OSError as exc:
        raise VerificationFailed(label, f"cannot be read ({exc.strerror})") from None


def verify_bundle(
    directory: Path, pinned: list[VerifierKey], origin: str | None, earlier: list[Path] | None = None
) -> dict[str, object]:
    for name in ("entries.jsonl", "keys.txt", "checkpoints"):
        if not (directory / name).exists():
            raise VerificationFailed(str(directory), f"not a ledger bundle: {name} is missing")
    trusted_from_bundle = not pinned
    keys = pinned
    if not keys:
        try:
            keys = [VerifierKey.decode(line) for line in _text(directory / "keys.txt", "keys.txt").splitlines() if line]
        except KeyFileError as exc:
            raise VerificationFailed("keys.txt", str(exc)) from None
    if origin is None and (directory / "bundle.json").exists():
        try:
            described = json.loads(_text(directory / "bundle.json", "bundle.json"))
        except (ValueError, RecursionError):
            raise VerificationFailed("bundle.json", "not JSON") from None
        if not isinstance(described, dict) or not isinstance(described.get("origin", ""), str):
            raise VerificationFailed("bundle.json", "not an object with an origin string")
        origin = described.get("origin")
    notes = [
        (f"checkpoints/{p.name}", _text(p, f"checkpoints/{p.name}"))
        for p in sorted((directory / "checkpoints").glob("*.note"))
    ]
    if not notes:
        raise VerificationFailed("checkpoints/", "the bundle holds no signed checkpoint")
    # Checkpoints seen before: each must verify with the same keys and match the bundle's entries.
    notes += [(f"--checkpoint {path}", _text(path, f"--checkpoint {path}")) for path in earlier or []]
    signed = check_notes(notes, keys, origin)
    result = replay(lambda: _entries(directory / "entries.jsonl"), signed)
    return {
        "tree_size": result.tree_size,
        "checkpoints": result.checkpoints_checked,
        "root": base64.b64encode(result.root).decode(),
        "unsigned_entries": result.tree_size - max(s.checkpoint.size for s in signed),
        "keys_from_bundle": trusted_from_bundle,
    }
