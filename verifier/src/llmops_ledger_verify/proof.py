"""Read and verify one entry's inclusion proof file: ``verify_proof(document, keys, origin)``.

An auditor who needs one entry, not the whole log, gets a proof file from the service's admin
(the entry's inclusion proof page). It is one JSON object:

- ``format``: ``llmops-ledger-inclusion-proof/1``;
- ``index``, ``body_b64`` (the entry's exact hashed bytes), ``leaf_hash_b64`` (the leaf hash the
  server stored) and ``entry`` (the same bytes decoded, for reading; sealed personal data stays
  sealed);
- ``tree_size`` and ``proof_b64``: the RFC 9162 audit path from the leaf to the root of the tree of
  that size, hashes in base64;
- ``checkpoint``: the C2SP signed note of that tree; ``keys``: the log's verifier keys;
  ``origin``: the log's origin line.

The checks: the decoded copy equals the hashed bytes (types included), the bytes carry their own
index and hash to the stored leaf hash, the checkpoint is signed by a trusted key for the log's
origin and is of the proof's tree size, and the audit path leads from the leaf to the signed root.
Trust comes from the keys pinned with ``--key``; without them the file's own ``keys`` are used,
which shows the file agrees with itself, not that it comes from the log you think.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from llmops_ledger_verify import merkle, notes
from llmops_ledger_verify.keys import KeyFileError, VerifierKey
from llmops_ledger_verify.replay import VerificationFailed, body_index

FORMAT = "llmops-ledger-inclusion-proof/1"


def _same_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)  # equal text: same value, types included


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationFailed(what, "not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise VerificationFailed(what, "not base64") from None


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VerificationFailed(what, "not a whole number")
    return value


def read_proof_file(path: Path) -> dict[str, Any]:
    """The proof file's JSON object; ``VerificationFailed`` naming the file if it is not one."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VerificationFailed(str(path), "not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise VerificationFailed(str(path), "not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise VerificationFailed(str(path), f"not an inclusion proof file (format {FORMAT})")
    return document


def verify_proof(document: dict[str, Any], pinned: list[VerifierKey], origin: str | None) -> dict[str, Any]:
    """Verify one inclusion proof document; returns a summary or raises ``VerificationFailed``."""
    index = _count(document.get("index"), "index")
    where = f"entry {index}"
    body = _b64(document.get("body_b64"), f"{where} body_b64")
    try:
        same = _same_json(json.loads(body)) == _same_json(document.get("entry"))
    except (ValueError, RecursionError):
        raise VerificationFailed(where, "its bytes are not JSON") from None
    if not same:
        raise VerificationFailed(where, "the decoded copy differs from the hashed bytes")
    if body_index(body) != index:
        raise VerificationFailed(where, f"its bytes say index {body_index(body)}: the entry was replaced")
    leaf = merkle.leaf_hash(body)
    if "leaf_hash_b64" in document and _b64(document["leaf_hash_b64"], f"{where} leaf_hash_b64") != leaf:
        raise VerificationFailed(where, "its bytes do not hash to its stored leaf hash: it was changed")

    keys_from_file = not pinned
    keys = pinned
    if keys_from_file:
        listed = document.get("keys")
        if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
            raise VerificationFailed("keys", "not a list of verifier keys")
        try:
            keys = [VerifierKey.decode(k) for k in listed]
        except KeyFileError as exc:
            raise VerificationFailed("keys", str(exc)) from None
    if origin is None:
        origin = document.get("origin") if isinstance(document.get("origin"), str) else None
    note = document.get("checkpoint")
    if not isinstance(note, str):
        raise VerificationFailed("checkpoint", "not a signed note")
    try:
        checkpoint = notes.verify(note, keys, origin=origin)
    except notes.NoteError as exc:
        raise VerificationFailed("checkpoint", str(exc)) from None

    size = _count(document.get("tree_size"), "tree_size")
    if size != checkpoint.size:
        raise VerificationFailed("checkpoint", f"it signs tree size {checkpoint.size}, the proof is for {size}")
    path = document.get("proof_b64")
    if not isinstance(path, list):
        raise VerificationFailed("proof_b64", "not a list of hashes")
    hashes = [_b64(h, f"proof_b64[{n}]") for n, h in enumerate(path)]
    try:
        merkle.verify_inclusion(index, size, leaf, hashes, checkpoint.root)
    except merkle.ProofError as exc:
        raise VerificationFailed(where, f"not included in the signed tree of size {size}: {exc}") from None
    # notes.verify checked every signature by a trusted key: those are the signers to name.
    trusted = {(k.name, k.key_id) for k in keys}
    signers = [f"{s.name}+{s.key_id.hex()}" for s in notes.parse(note)[1] if (s.name, s.key_id) in trusted]
    return {
        "index": index,
        "tree_size": size,
        "root": base64.b64encode(checkpoint.root).decode(),
        "origin": checkpoint.origin,
        "signed_by": signers,
        "keys_from_file": keys_from_file,
    }
