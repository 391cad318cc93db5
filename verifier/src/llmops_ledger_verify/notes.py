"""C2SP tlog-checkpoint bodies inside C2SP signed notes. Standard library and ``cryptography`` only.

A checkpoint note::

    <origin>\\n
    <tree size, decimal>\\n
    <base64 root hash>\\n
    \\n
    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n   (one line per signer)

The signature covers the body: the three lines (and any extension lines) with their newlines.
A verifier ignores signatures by keys it does not know, and accepts a note when at least one known
key signed it and every signature by a known key verifies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmops_ledger_verify.keys import VerifierKey

SIGNATURE_PREFIX = "\u2014 "  # em dash and a space


class NoteError(ValueError):
    """A checkpoint note is malformed, or its signatures do not hold."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


class Signer(Protocol):
    """A signing key, as the service holds them (``audits.ledger.keys.SignerKey``)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def sign(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    if not signers:
        raise NoteError("a checkpoint needs at least one signing key")
    body = checkpoint.body()
    lines = []
    for signer in signers:
        blob = base64.b64encode(signer.key_id + signer.sign(body.encode())).decode()
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {blob}\n")
    return body + "\n" + "".join(lines)


def parse(text: str) -> tuple[Checkpoint, list[Signature]]:
    if "\r" in text or any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("a note holds control characters")
    body, sep, signature_block = text.partition("\n\n")
    if not sep:
        raise NoteError("a note needs a blank line between its body and its signatures")
    lines = body.split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint body has an origin, a tree size and a root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise NoteError("the origin line is empty")
    if not (size_text.isascii() and size_text.isdigit()) or (size_text != "0" and size_text.startswith("0")):
        raise NoteError(f"the tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise NoteError("the root hash is not base64") from None
    if len(root) != 32:
        raise NoteError(f"the root hash is {len(root)} bytes, not 32")
    signatures = parse_signature_lines(signature_block)
    if not signatures:
        raise NoteError("the note is not signed")
    # Extension lines after the root are allowed by tlog-checkpoint; this log writes none.
    return Checkpoint(origin=origin, size=int(size_text), root=root), signatures


def parse_signature_lines(block: str) -> list[Signature]:
    """The signature lines of a signed note (everything after its blank line); ``NoteError``
    naming the first malformed line. Shared by checkpoints and deployment grants."""
    if not block.endswith("\n"):
        raise NoteError("a note ends with a newline")
    signatures = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"malformed signature line {line[:80]!r}")
        name, _, blob = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:  # binascii.Error, or a character outside ASCII
            raise NoteError(f"signature by {name!r} is not base64") from None
        if not name or len(raw) < 5:
            raise NoteError(f"malformed signature line {line[:80]!r}")
        signatures.append(Signature(name=name, key_id=raw[:4], signature=raw[4:]))
    return signatures


def verify(text: str, verifiers: Iterable[VerifierKey], *, origin: str | None = None) -> Checkpoint:
    """Parse ``text`` and check its signatures against ``verifiers``; raise ``NoteError`` if not."""
    checkpoint, signatures = parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the note is for origin {checkpoint.origin!r}, not {origin!r}")
    known = {(v.name, v.key_id): v for v in verifiers}
    body = text.partition("\n\n")[0].encode() + b"\n"
    verified = 0
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            continue
        if not key.verify(sig.signature, body):
            raise NoteError(f"the signature by {sig.name}+{sig.key_id.hex()} does not verify")
        verified += 1
    if verified == 0:
        raise NoteError("no signature by a known key")
    return checkpoint
