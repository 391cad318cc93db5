"""This service's own witness key (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``).

The file ``LEDGER_WITNESS_KEY_FILE`` holds one line::

    PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x04 || 32-byte Ed25519 seed)>

the form of the ledger's signing keys with the cosignature type byte 0x04 (its key ID is
``SHA-256(name || 0x0A || 0x04 || public key)[:4]``). It is created on first use, mode 0600, named
``LEDGER_WITNESS_NAME``; a group- or world-readable file is refused. The public half, given to the
operators of the logs witnessed, is ``witness_key().verifier().encode()``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from django.conf import settings
from llmops_ledger_verify.cosignature import COSIGNATURE_ALG, CosignerKey, cosigner_key_id
from llmops_ledger_verify.keys import check_name

from audits.ledger.keys import KeyFileError, _check_permissions


@dataclass(frozen=True)
class WitnessKey:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public_key)

    def verifier(self) -> CosignerKey:
        return CosignerKey(name=self.name, key_id=self.key_id, public_key=self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def encode(self) -> str:
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        blob = base64.b64encode(bytes([COSIGNATURE_ALG]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        check_name(name)
        return cls(name=name, private_key=Ed25519PrivateKey.generate())

    @classmethod
    def decode(cls, text: str) -> WitnessKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFileError("a witness key is PRIVATE+KEY+<name>+<key id hex>+<base64 key>")
        name, hex_id, blob = parts[2:]
        check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise KeyFileError(f"witness key {name}: bad encoding ({exc})") from None
        if len(raw) != 33 or raw[0] != COSIGNATURE_ALG:
            raise KeyFileError(f"witness key {name}: not an Ed25519 cosignature/v1 key (type byte 0x04)")
        key = cls(name=name, private_key=Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if key.key_id != wanted:
            raise KeyFileError(f"witness key {name}: key id {hex_id} does not match the key")
        return key


def write_witness_key(path: Path, key: WitnessKey) -> None:
    """Create ``path`` holding ``key``, mode 0600 from the start; never replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.encode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_witness_key(path: Path) -> WitnessKey:
    _check_permissions(path)
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise KeyFileError(f"cannot read witness key file {path}: {exc.strerror or exc}") from None
    if len(lines) != 1:
        raise KeyFileError(f"the witness key file {path} must hold exactly one key")
    try:
        return WitnessKey.decode(lines[0])
    except KeyFileError as exc:
        raise KeyFileError(f"witness key file {path}: {exc}") from None


def witness_key() -> WitnessKey:
    """This service's witness key, created on first use."""
    path = Path(settings.LEDGER_WITNESS_KEY_FILE)
    if not path.exists():
        try:
            write_witness_key(path, WitnessKey.generate(settings.LEDGER_WITNESS_NAME))
        except FileExistsError:
            pass  # another process made it first
    return load_witness_key(path)
