"""Ledger verifier keys in the C2SP signed-note form. Standard library and ``cryptography`` only.

A verifier key, published for anyone, is ``<name>+<key id hex>+<base64(0x01 || public key)>``.
The key ID follows C2SP signed-note: the first four bytes of
``SHA-256(name || 0x0A || 0x01 || public key)``. The service's signing keys (their private half,
files and permissions) are ``audits.ledger.keys``, which builds on this module.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519_ALG = 0x01
_NAME_FORBIDDEN = set(" +\n\t\r") | {"\u2014"}


class KeyFileError(Exception):
    """A key, or a file of keys, is malformed, missing, unreadable or too widely readable."""


def check_name(name: str) -> None:
    if not name or any(ch in _NAME_FORBIDDEN for ch in name) or not name.isprintable():
        raise KeyFileError(f"invalid key name {name!r}: no spaces, '+' or control characters")


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_ALG]) + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: bytes

    def encode(self) -> str:
        blob = base64.b64encode(bytes([ED25519_ALG]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def decode(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)  # base64 may hold "+"; a name never does
        if len(parts) != 3:
            raise KeyFileError("a verifier key is <name>+<key id hex>+<base64 key>")
        name, hex_id, blob = parts
        check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise KeyFileError(f"verifier key {name}: bad encoding ({exc})") from None
        if len(raw) != 33 or raw[0] != ED25519_ALG:
            raise KeyFileError(f"verifier key {name}: not an Ed25519 key")
        public = raw[1:]
        if key_id(name, public) != wanted_id:
            raise KeyFileError(f"verifier key {name}: key id {hex_id} does not match the key")
        return cls(name=name, key_id=wanted_id, public_key=public)
