"""Verify an exported ledger bundle offline: ``python -m audits.verify DIR [--key KEY ...]``.

Needs only Python and ``cryptography``; it never imports Django and never contacts the service.
It re-hashes every entry's exact bytes, checks that the decoded copy matches them, rebuilds the
RFC 9162 roots, checks every checkpoint's Ed25519 signatures and that each signed root matches
the entries. Exit status 0 when all holds; 1 with the first failing entry or checkpoint named.

Pin the log's keys with ``--key`` (obtained from the log operator out of band); without it the
bundle's own ``keys.txt`` is trusted, and the verifier says so. Pass checkpoints you saved earlier
(``GET /api/v1/ledger/checkpoint``) with ``--checkpoint FILE``: the bundle must hold their trees,
so a history rewritten and signed again since (by the operator's own key, which the signatures
alone cannot tell from the first) is caught.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from audits.ledger.keys import KeyFileError, VerifierKey
from audits.ledger.replay import VerificationFailed, check_notes, replay


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audits.verify", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="directory written by `manage.py ledger export`")
    parser.add_argument("--key", action="append", default=[], help="a verifier key to trust (repeatable)")
    parser.add_argument("--origin", help="the log's origin line to require")
    parser.add_argument(
        "--checkpoint", action="append", default=[], type=Path,
        help="a signed checkpoint saved earlier, whose tree the bundle must hold (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        pinned = [VerifierKey.decode(k) for k in args.key]
        try:
            outcome = verify_bundle(args.bundle, pinned, args.origin, args.checkpoint)
        except OSError as exc:  # say, a folder where a file belongs, or unreadable files
            raise VerificationFailed(exc.filename or str(args.bundle), f"cannot be read ({exc.strerror})") from None
    except KeyFileError as exc:
        print(f"FAIL --key: {exc}", file=sys.stderr)
        return 1
    except VerificationFailed as failure:
        print(f"FAIL {failure.where}: {failure.why}", file=sys.stderr)
        return 1
    if outcome["keys_from_bundle"]:
        print("note: keys taken from the bundle's keys.txt; pin them with --key to verify independently")
    if outcome["unsigned_entries"]:
        print(
            f"note: the last {outcome['unsigned_entries']} entries follow the last checkpoint; no signature covers them"
        )
    print(f"OK {outcome['tree_size']} entries, {outcome['checkpoints']} checkpoints verified; root {outcome['root']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
