"""Verify a SCITT receipt of one ledger entry: ``verify_receipt(receipt, keys, entry=...)``.

A receipt (RFC 9942 COSE Receipts, over an RFC 9162 tree; the form RFC 9943, SCITT, names a
Receipt) is a tagged ``COSE_Sign1`` (tag 18) that the service signs with its ledger key::

    18([
      << {1: -8,                          alg: EdDSA (Ed25519)
          4: '<name>+<key id hex>',       kid: the C2SP verifier key that signed it
          15: {1: <origin>,               CWT claims: iss, the log's origin line
               2: 'entry <index>',                    sub, the entry
               6: <checkpoint time>},                 iat, when that checkpoint was signed
          16: 'application/scitt-receipt+cose',       typ
          395: 1} >>,                     vds: RFC9162_SHA256
      {396: {-1: [<< [tree size, leaf index, [audit path hashes]] >>]},   vdp: one inclusion proof
       'llmops-governance/checkpoint': <C2SP signed checkpoint of that tree size>},
      nil,                                payload: detached, the root of that tree
      <64-byte Ed25519 signature over Sig_structure ["Signature1", protected, h'', root]>
    ])

The checks, in this order, each refusing with ``VerificationFailed`` naming what is wrong: the
bytes are a receipt of this form; its ``kid`` is one of the trusted keys; the checkpoint in it is
signed by a trusted key (for ``origin`` when given) and is of the proof's tree size; the entry's
bytes carry the proof's index and, hashed as a leaf, lead along the audit path to the checkpoint's
root (else the entry is not the one the receipt proves, or the path was changed); the COSE
signature holds over that root. ``leaf_hash`` may stand in for the entry's bytes.

Standard library and ``cryptography`` only: the few CBOR forms a receipt uses (integers, byte and
text strings, arrays, maps, tags, null) are decoded here rather than with a CBOR package, so the
verifier keeps its single dependency. Indefinite lengths, floats and duplicate map keys are refused.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmops_ledger_verify import merkle, notes
from llmops_ledger_verify.keys import KeyFileError, VerifierKey
from llmops_ledger_verify.replay import VerificationFailed, body_index

COSE_SIGN1_TAG = 18
ALG, KID, CWT_CLAIMS, TYP, VDS, VDP = 1, 4, 15, 16, 395, 396
ALG_EDDSA = -8
VDS_RFC9162_SHA256 = 1
INCLUSION_PROOFS = -1
ISS, SUB, IAT = 1, 2, 6
CHECKPOINT_LABEL = "llmops-governance/checkpoint"
RECEIPT_TYPE = "application/scitt-receipt+cose"
MAX_RECEIPT_BYTES = 64 * 1024  # a receipt of a tree of 2**63 entries with a dozen signers stays far below
_MAX_DEPTH = 8


class CborError(ValueError):
    """Bytes that are not CBOR of the forms a receipt uses."""


@dataclass(frozen=True)
class Tagged:
    tag: int
    value: Any


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    if pos >= len(data):
        raise CborError("truncated")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise CborError(f"indefinite length or reserved value (initial byte 0x{initial:02x}) is not used in receipts")
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise CborError("truncated")
    return major, int.from_bytes(data[pos : pos + size], "big"), pos + size


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise CborError("nested too deep")
    initial = data[pos] if pos < len(data) else None
    major, arg, pos = _head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise CborError("truncated")
        raw = data[pos:end]
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise CborError("a text string is not UTF-8") from None
    if major in (4, 5):
        if arg > len(data) - pos:  # every item takes a byte at least
            raise CborError("truncated")
        if major == 4:
            items = []
            for _ in range(arg):
                value, pos = _item(data, pos, depth + 1)
                items.append(value)
            return items, pos
        mapping: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = _item(data, pos, depth + 1)
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise CborError("a map key is neither an integer nor a text string")
            if key in mapping:
                raise CborError(f"map key {key!r} appears twice")
            mapping[key], pos = _item(data, pos, depth + 1)
        return mapping, pos
    if major == 6:
        value, pos = _item(data, pos, depth + 1)
        return Tagged(arg, value), pos
    simple = {0xF4: False, 0xF5: True, 0xF6: None}
    if initial in simple:
        return simple[initial], pos
    raise CborError(f"initial byte 0x{initial:02x} (a float or simple value) is not used in receipts")


def cbor_decode(data: bytes) -> Any:
    """One CBOR data item filling ``data``; ``CborError`` for anything else."""
    value, end = _item(data, 0, 0)
    if end != len(data):
        raise CborError(f"{len(data) - end} bytes follow the data item")
    return value


def _bstr(value: bytes) -> bytes:
    """A CBOR byte string (definite length)."""
    n = len(value)
    if n < 24:
        head = bytes([0x40 | n])
    elif n < 1 << 8:
        head = bytes([0x58, n])
    elif n < 1 << 16:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + value


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4 ``Sig_structure`` of a COSE_Sign1 with no external AAD: what is signed."""
    return b"\x84" + b"\x6aSignature1" + _bstr(protected) + b"\x40" + _bstr(payload)


@dataclass(frozen=True)
class Receipt:
    """A receipt's parts, decoded and shape-checked; nothing verified yet."""

    protected: bytes  # the serialised protected header, as signed
    kid: str
    issuer: str
    subject: str
    tree_size: int
    index: int
    path: list[bytes]
    checkpoint: str
    signature: bytes


def _uint(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VerificationFailed("receipt", f"{what} is not an unsigned integer")
    return value


def parse_receipt(data: bytes) -> Receipt:
    """Decode ``data`` as a receipt of this log's form; ``VerificationFailed`` naming the part at fault."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_RECEIPT_BYTES:
        raise VerificationFailed("receipt", f"not bytes of at most {MAX_RECEIPT_BYTES}")
    try:
        top = cbor_decode(bytes(data))
    except CborError as exc:
        raise VerificationFailed("receipt", f"not CBOR: {exc}") from None
    if not isinstance(top, Tagged) or top.tag != COSE_SIGN1_TAG:
        raise VerificationFailed("receipt", "not a tagged COSE_Sign1 (CBOR tag 18)")
    if not isinstance(top.value, list) or len(top.value) != 4:
        raise VerificationFailed("receipt", "a COSE_Sign1 is an array of four items")
    protected, unprotected, payload, signature = top.value
    if not isinstance(protected, bytes) or not isinstance(unprotected, dict):
        raise VerificationFailed("receipt", "the headers are not a byte string and a map")
    if payload is not None:
        raise VerificationFailed("receipt", "the payload must be detached (nil): the root is recomputed, never read")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise VerificationFailed("receipt", "the signature is not 64 bytes (Ed25519)")
    try:
        header = cbor_decode(protected)
    except CborError as exc:
        raise VerificationFailed("receipt protected header", f"not CBOR: {exc}") from None
    if not isinstance(header, dict):
        raise VerificationFailed("receipt protected header", "not a map")
    if header.get(ALG) != ALG_EDDSA:
        raise VerificationFailed("receipt protected header", f"alg (1) is {header.get(ALG)!r}, not EdDSA (-8)")
    if header.get(VDS) != VDS_RFC9162_SHA256:
        raise VerificationFailed(
            "receipt protected header", f"vds (395) is {header.get(VDS)!r}, not RFC9162_SHA256 (1)"
        )
    kid = header.get(KID)
    if not isinstance(kid, bytes):
        raise VerificationFailed("receipt protected header", "kid (4) is missing or not a byte string")
    claims = header.get(CWT_CLAIMS)
    if not isinstance(claims, dict) or not isinstance(claims.get(ISS), str) or not isinstance(claims.get(SUB), str):
        raise VerificationFailed("receipt protected header", "CWT claims (15) lack iss (1) or sub (2)")
    vdp = unprotected.get(VDP)
    proofs = vdp.get(INCLUSION_PROOFS) if isinstance(vdp, dict) else None
    if not isinstance(proofs, list) or len(proofs) != 1 or not isinstance(proofs[0], bytes):
        raise VerificationFailed("receipt unprotected header", "vdp (396) does not hold one inclusion proof (-1)")
    try:
        proof = cbor_decode(proofs[0])
    except CborError as exc:
        raise VerificationFailed("receipt inclusion proof", f"not CBOR: {exc}") from None
    if not isinstance(proof, list) or len(proof) != 3 or not isinstance(proof[2], list):
        raise VerificationFailed("receipt inclusion proof", "not [tree size, leaf index, [hashes]]")
    size, index = _uint(proof[0], "the tree size"), _uint(proof[1], "the leaf index")
    path = proof[2]
    if not all(isinstance(h, bytes) and len(h) == merkle.HASH_SIZE for h in path):
        raise VerificationFailed("receipt inclusion proof", "a hash of the audit path is not 32 bytes")
    checkpoint = unprotected.get(CHECKPOINT_LABEL)
    if not isinstance(checkpoint, str):
        raise VerificationFailed("receipt unprotected header", f"no signed checkpoint ({CHECKPOINT_LABEL!r})")
    return Receipt(
        protected=protected, kid=kid.decode("utf-8", "replace"), issuer=claims[ISS], subject=claims[SUB],
        tree_size=size, index=index, path=path, checkpoint=checkpoint, signature=signature,
    )  # fmt: skip


def _key_for(kid: str, keys: Sequence[VerifierKey]) -> VerifierKey:
    name, _, hex_id = kid.rpartition("+")
    for key in keys:
        if key.name == name and key.key_id.hex() == hex_id:
            return key
    raise VerificationFailed("receipt", f"it is signed by key {kid!r}, which is not among the trusted keys")


def verify_receipt(
    receipt: bytes,
    keys: Sequence[VerifierKey],
    *,
    entry: bytes | None = None,
    leaf_hash: bytes | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """Verify ``receipt`` for the entry whose exact bytes are ``entry`` (or whose leaf hash is
    ``leaf_hash``) against the trusted verifier ``keys``; returns a summary (index, tree size,
    root, origin, the key that signed) or raises ``VerificationFailed``."""
    if (entry is None) == (leaf_hash is None):
        raise ValueError("give the entry's bytes or its leaf hash, one of the two")
    if not keys:
        raise VerificationFailed("keys", "no trusted key: a receipt carries none of its own")
    parsed = parse_receipt(receipt)
    key = _key_for(parsed.kid, keys)
    try:
        checkpoint = notes.verify(parsed.checkpoint, keys, origin=origin)
    except notes.NoteError as exc:
        raise VerificationFailed("receipt checkpoint", str(exc)) from None
    if parsed.issuer != checkpoint.origin:
        raise VerificationFailed("receipt", f"its issuer {parsed.issuer!r} is not the checkpoint's origin")
    if checkpoint.size != parsed.tree_size:
        raise VerificationFailed(
            "receipt checkpoint", f"it signs tree size {checkpoint.size}, the proof is for {parsed.tree_size}"
        )
    where = f"entry {parsed.index}"
    if parsed.subject != f"entry {parsed.index}":
        raise VerificationFailed("receipt", f"its subject {parsed.subject!r} is not the proof's entry {parsed.index}")
    if entry is not None:
        said = body_index(entry)
        if said != parsed.index:
            raise VerificationFailed(where, f"the entry given is entry {said}, not the one the receipt proves")
        leaf_hash = merkle.leaf_hash(entry)
    assert leaf_hash is not None
    try:
        root = merkle.root_from_inclusion_proof(parsed.index, parsed.tree_size, leaf_hash, parsed.path)
    except merkle.ProofError as exc:
        raise VerificationFailed(where, f"the audit path is malformed: {exc}") from None
    if root != checkpoint.root:
        raise VerificationFailed(
            where,
            "the entry's bytes and the audit path lead to a root other than the signed checkpoint's: "
            "the entry is not the one this receipt proves, or the path was changed",
        )
    if not key.verify(parsed.signature, sig_structure(parsed.protected, root)):
        raise VerificationFailed(
            "receipt", f"the COSE signature by {parsed.kid} does not verify: the receipt was changed"
        )
    return {
        "index": parsed.index,
        "tree_size": parsed.tree_size,
        "root": base64.b64encode(root).decode(),
        "origin": checkpoint.origin,
        "signed_by": parsed.kid,
    }


def decode_keys(lines: Sequence[str]) -> list[VerifierKey]:
    """Verifier keys from their text form (``GET /api/v1/ledger/keys``), ``VerificationFailed`` if malformed."""
    try:
        return [VerifierKey.decode(line) for line in lines if line.strip()]
    except KeyFileError as exc:
        raise VerificationFailed("keys", str(exc)) from None
