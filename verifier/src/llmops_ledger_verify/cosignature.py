"""Witness co-signatures of checkpoints (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``) and the
k-of-n witness policy. Standard library and ``cryptography`` only.

A co-signature is a signed-note signature line on the checkpoint::

    — <witness name> base64(key id || u64 big-endian timestamp || Ed25519 signature)

Its key ID is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (0x04: the cosignature type), and
the signed message is ``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the checkpoint's whole
note body (its lines with their newlines, no signature line). A witness's verifier key is
``<name>+<key id hex>+<base64(0x04 || public key)>``.

The policy: a checkpoint is witnessed when at least ``quorum`` of the configured witnesses
co-signed it; ``check_quorum`` requires at least one witnessed checkpoint and refuses two
co-signed trees of the same size (a split view). A co-signature by a configured witness that does
not verify is a fault; lines by keys not configured are ignored, as signed notes require.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from llmops_ledger_verify.keys import KeyFileError, check_name
from llmops_ledger_verify.notes import SIGNATURE_PREFIX, NoteError, Signature, parse, parse_signature_lines
from llmops_ledger_verify.replay import VerificationFailed

COSIGNATURE_ALG = 0x04
HEADER = "cosignature/v1"
_MAX_TIMESTAMP = 2**63 - 1


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_ALG]) + public_key).digest()[:4]


def note_body(text: str) -> str:
    """The body of a signed note: everything before its blank line, with its final newline."""
    return text.partition("\n\n")[0] + "\n"


def cosigned_message(body: str, timestamp: int) -> bytes:
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise NoteError(f"co-signature time {timestamp} is out of range")
    return f"{HEADER}\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key, as a log (or a verifier) is configured with it."""

    name: str
    key_id: bytes
    public_key: bytes

    def encode(self) -> str:
        blob = base64.b64encode(bytes([COSIGNATURE_ALG]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def decode(cls, text: str) -> CosignerKey:
        parts = text.strip().split("+", 2)  # base64 may hold "+"; a name never does
        if len(parts) != 3:
            raise KeyFileError("a witness key is <name>+<key id hex>+<base64(0x04 || key)>")
        name, hex_id, blob = parts
        check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise KeyFileError(f"witness key {name}: bad encoding ({exc})") from None
        if len(raw) != 33 or raw[0] != COSIGNATURE_ALG:
            raise KeyFileError(f"witness key {name}: not an Ed25519 cosignature/v1 key (type byte 0x04)")
        public = raw[1:]
        if cosigner_key_id(name, public) != wanted_id:
            raise KeyFileError(f"witness key {name}: key id {hex_id} does not match the key")
        return cls(name=name, key_id=wanted_id, public_key=public)

    def matches(self, signature: Signature) -> bool:
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, signature: Signature, body: str) -> int:
        """The co-signature's timestamp; ``NoteError`` if it does not verify over ``body``."""
        if len(signature.signature) != 8 + 64:
            raise NoteError(f"the co-signature by {self.name} is not a timestamped Ed25519 signature")
        timestamp = int.from_bytes(signature.signature[:8], "big")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature.signature[8:], cosigned_message(body, timestamp)
            )
        except InvalidSignature:
            raise NoteError(f"the co-signature by {self.name}+{self.key_id.hex()} does not verify") from None
        return timestamp


class Cosigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def cosign(body: str, cosigner: Cosigner, timestamp: int) -> str:
    """One co-signature line (with its newline) over a checkpoint's note body."""
    signature = cosigner.sign(cosigned_message(body, timestamp))
    blob = base64.b64encode(cosigner.key_id + timestamp.to_bytes(8, "big") + signature).decode()
    return f"{SIGNATURE_PREFIX}{cosigner.name} {blob}\n"


def cosignatures(text: str, witnesses: Iterable[CosignerKey]) -> dict[CosignerKey, int]:
    """The witnesses among ``witnesses`` whose co-signature on the note ``text`` verifies, with its
    time. ``NoteError`` for a malformed note or a configured witness's line that does not verify."""
    parse(text)
    body = note_body(text)
    known = list(witnesses)
    found: dict[CosignerKey, int] = {}
    for signature in parse_signature_lines(text.partition("\n\n")[2]):
        for witness in known:
            if witness.matches(signature):
                found[witness] = witness.verify(signature, body)
    return found


@dataclass
class QuorumOutcome:
    quorum: int
    witnesses: int
    witnessed_size: int = -1  # the largest tree co-signed by a quorum; -1: none
    witnessed_by: list[str] = field(default_factory=list)
    latest_by_witness: dict[str, int] = field(default_factory=dict)


def check_quorum(
    texts: Sequence[tuple[str, str]], witnesses: Sequence[CosignerKey], quorum: int, *, require: bool = True
) -> QuorumOutcome:
    """Hold the co-signed notes ``texts`` (``(label, note)``) against the policy ``quorum`` of
    ``witnesses``. Raises ``VerificationFailed`` for a co-signature that does not verify, for two
    co-signed trees of the same size with different roots (a split view), and, when ``quorum`` is
    above zero and ``require``, when no checkpoint carries ``quorum`` co-signatures. The log's own signatures and
    the roots against the entries are the caller's to check (``check_notes`` and ``replay``)."""
    if quorum > len(witnesses):
        raise VerificationFailed("witness quorum", f"{quorum} of {len(witnesses)} witnesses can never be met")
    outcome = QuorumOutcome(quorum=quorum, witnesses=len(witnesses))
    trees: dict[int, tuple[bytes, str]] = {}
    signers: dict[tuple[int, bytes], set[str]] = {}
    for label, text in texts:
        try:
            checkpoint, _ = parse(text)
            found = cosignatures(text, witnesses)
        except NoteError as exc:
            raise VerificationFailed(label, str(exc)) from None
        if not found:
            continue
        seen = trees.get(checkpoint.size)
        if seen is not None and seen[0] != checkpoint.root:
            raise VerificationFailed(
                label,
                f"split view: witnesses co-signed two different trees of size {checkpoint.size} "
                f"(the other in {seen[1]})",
            )
        trees[checkpoint.size] = (checkpoint.root, label)
        names = signers.setdefault((checkpoint.size, checkpoint.root), set())
        for witness in found:
            names.add(witness.encode())
            latest = outcome.latest_by_witness.get(witness.name, -1)
            outcome.latest_by_witness[witness.name] = max(latest, checkpoint.size)
    for (size, _), names in signers.items():
        if len(names) >= max(quorum, 1) and size > outcome.witnessed_size:
            outcome.witnessed_size = size
            outcome.witnessed_by = sorted(key.split("+", 1)[0] for key in names)
    if require and quorum and outcome.witnessed_size < 0:
        raise VerificationFailed(
            "witness quorum",
            f"no checkpoint carries co-signatures of {quorum} of the {len(witnesses)} configured witnesses",
        )
    return outcome
