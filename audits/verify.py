"""Verify an exported ledger bundle offline: ``python -m audits.verify DIR [--key KEY ...]``.

Needs only Python and ``cryptography``; it never imports Django and never contacts the service.
It re-hashes every entry's exact bytes, checks that the decoded copy matches them, rebuilds the
RFC 9162 roots, checks every checkpoint's Ed25519 signatures and that each signed root matches
the entries. Exit status 0 when all holds; 1 with the first failing entry or checkpoint named.

Pin the log's keys with ``--key`` (obtained from the log operator out of band); without it the
bundle's own ``keys.txt`` is trusted, and the verifier says so.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from audits.ledger.keys import KeyFileError, VerifierKey
from audits.ledger.replay import VerificationFailed, check_notes, replay


def _entries(path: Path) -> Iterator[tuple[int, bytes, bytes | None]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                index, body = int(record["index"]), base64.b64decode(record["body_b64"], validate=True)
                stored_leaf = (
                    base64.b64decode(record["leaf_hash_b64"], validate=True) if "leaf_hash_b64" in record else None
                )
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise VerificationFailed(f"entries.jsonl line {number}", "not an entry record") from None
            try:
                decoded = json.loads(body)
            except ValueError:
                raise VerificationFailed(f"entry {index}", "its bytes are not JSON") from None
            if decoded != record.get("entry"):
                raise VerificationFailed(f"entry {index}", "the decoded copy differs from the hashed bytes")
            yield index, body, stored_leaf


def verify_bundle(directory: Path, pinned: list[VerifierKey], origin: str | None) -> dict[str, object]:
    for name in ("entries.jsonl", "keys.txt", "checkpoints"):
        if not (directory / name).exists():
            raise VerificationFailed(str(directory), f"not a ledger bundle: {name} is missing")
    trusted_from_bundle = not pinned
    keys = pinned
    if not keys:
        try:
            keys = [VerifierKey.decode(line) for line in (directory / "keys.txt").read_text().splitlines() if line]
        except KeyFileError as exc:
            raise VerificationFailed("keys.txt", str(exc)) from None
    if origin is None and (directory / "bundle.json").exists():
        origin = json.loads((directory / "bundle.json").read_text()).get("origin")
    notes = [
        (f"checkpoints/{p.name}", p.read_text(encoding="utf-8"))
        for p in sorted((directory / "checkpoints").glob("*.note"))
    ]
    if not notes:
        raise VerificationFailed("checkpoints/", "the bundle holds no signed checkpoint")
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
    args = parser.parse_args(argv)
    try:
        pinned = [VerifierKey.decode(k) for k in args.key]
        outcome = verify_bundle(args.bundle, pinned, args.origin)
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
