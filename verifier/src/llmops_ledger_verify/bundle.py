"""Read an exported ledger bundle and verify it: ``verify_bundle(DIR, keys, origin, earlier)``.

A bundle (``manage.py ledger export DIR``) holds ``entries.jsonl`` (each entry's exact hashed bytes,
the leaf hash the server stored and a decoded copy), ``checkpoints/*.note`` (signed checkpoints),
``keys.txt`` (the log's verifier keys), ``bundle.json`` (its origin) and, when the log has witnesses,
``witnessed/*.note`` (checkpoints with their witnesses' co-signature lines, C2SP tlog-cosignature)
and ``witnesses.txt`` (the witnesses' keys the log was configured with). The first fault found
raises ``VerificationFailed`` naming the file, line, entry or checkpoint at fault.

Co-signed checkpoints are checked like any other (the log's signature, their roots against the
entries) and then against the witness policy (``cosignature.check_quorum``): with ``quorum`` above
zero, at least one checkpoint must carry that many co-signatures of the pinned witnesses, and no
two co-signed trees of one size may differ.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from llmops_ledger_verify.cosignature import CosignerKey, check_quorum
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


def _bundle_witnesses(directory: Path) -> list[CosignerKey]:
    path = directory / "witnesses.txt"
    if not path.exists():
        return []
    try:
        return [CosignerKey.decode(line) for line in _text(path, "witnesses.txt").splitlines() if line.strip()]
    except KeyFileError as exc:
        raise VerificationFailed("witnesses.txt", str(exc)) from None


def verify_bundle(
    directory: Path,
    pinned: list[VerifierKey],
    origin: str | None,
    earlier: list[Path] | None = None,
    witnesses: list[CosignerKey] | None = None,
    quorum: int = 0,
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
    # Co-signed checkpoints: the log's signature and the roots are checked with the others.
    witnessed = [
        (f"witnessed/{p.name}", _text(p, f"witnessed/{p.name}"))
        for p in sorted((directory / "witnessed").glob("*.note"))
    ]
    witnesses_from_bundle = not witnesses
    witness_keys = witnesses or _bundle_witnesses(directory)
    signed = check_notes(notes + witnessed, keys, origin)
    result = replay(lambda: _entries(directory / "entries.jsonl"), signed)
    policy = check_quorum(notes + witnessed, witness_keys, quorum)
    return {
        "tree_size": result.tree_size,
        "checkpoints": result.checkpoints_checked - len(witnessed),  # co-signed copies counted apart
        "root": base64.b64encode(result.root).decode(),
        "unsigned_entries": result.tree_size - max(s.checkpoint.size for s in signed),
        "keys_from_bundle": trusted_from_bundle,
        "witness_keys_from_bundle": witnesses_from_bundle and bool(witness_keys),
        "witnessed_notes": len(witnessed),
        "witnessed_size": policy.witnessed_size,
        "witnessed_by": policy.witnessed_by,
        "unwitnessed_entries": result.tree_size - max(policy.witnessed_size, 0) if witness_keys else None,
    }
