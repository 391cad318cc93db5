"""The ledger's Ed25519 signing keys, in the C2SP signed-note formats.

A signing key file holds one or more signer keys, one per line, in the form Go's
``golang.org/x/mod/sumdb/note`` package and the C2SP signed-note spec use::

    PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte Ed25519 seed)>

Every key in the file signs each checkpoint; a rotation adds a key (both sign during the overlap)
and later removes the old one, whose public key stays published. The file must be readable by
the service's user alone: a group- or world-readable key is refused at start-up.

The key ID follows C2SP signed-note: the first four bytes of
``SHA-256(name || 0x0A || 0x01 || public key)``. The verifier key form, published for anyone, is
``<name>+<key id hex>+<base64(0x01 || public key)>``. That public half (``VerifierKey``, key IDs)
is the offline verifier's code (``verifier/``, module ``llmops_ledger_verify.keys``); this module
adds the private keys and the key files.

Which verifier keys are trusted is configuration, never the database the keys are meant to check:
``LEDGER_TRUSTED_KEYS_FILE`` (verifier keys, one a line; ``ledger keygen`` writes the signing key's
public half there, ``rotate-key`` adds the new one, ``retire-key`` keeps the old one there).
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from llmops_ledger_verify.keys import ED25519_ALG, KeyFileError, VerifierKey, check_name, key_id

__all__ = [
    "ED25519_ALG",
    "KeyFileError",
    "SignerKey",
    "VerifierKey",
    "key_id",
    "load_signer_keys",
    "load_verifier_keys",
    "trust_verifier_keys",
    "write_signer_keys",
]


@dataclass(frozen=True)
class SignerKey:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def verifier(self) -> VerifierKey:
        return VerifierKey(name=self.name, key_id=self.key_id, public_key=self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def encode(self) -> str:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        blob = base64.b64encode(bytes([ED25519_ALG]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        check_name(name)
        return cls(name=name, private_key=Ed25519PrivateKey.generate())

    @classmethod
    def decode(cls, text: str) -> SignerKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFileError("a signer key is PRIVATE+KEY+<name>+<key id hex>+<base64 key>")
        name, hex_id, blob = parts[2], parts[3], parts[4]
        check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise KeyFileError(f"signer key {name}: bad encoding ({exc})") from None
        if len(raw) != 33 or raw[0] != ED25519_ALG:
            raise KeyFileError(f"signer key {name}: not an Ed25519 key")
        signer = cls(name=name, private_key=Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != wanted_id:
            raise KeyFileError(f"signer key {name}: key id {hex_id} does not match the key")
        return signer


def _check_permissions(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(
            f"signing key file {path} does not exist; create it with `python manage.py ledger keygen`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"signing key file {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"signing key file {path} is accessible to group or others (mode {stat.S_IMODE(mode):o}); "
            f"run chmod 600 {path}"
        )


def _read_key_lines(path: Path, decode: Any, what: str) -> list[Any]:
    """Decode one key a line (blank lines and ``#`` comments skipped); ``KeyFileError`` names the
    file and the line at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    keys = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys.append(decode(line))
        except KeyFileError as exc:
            raise KeyFileError(f"{what} {path}, line {number}: {exc}") from None
    if not keys:
        raise KeyFileError(f"the {what} {path} holds no key")
    return keys


def load_verifier_keys(path: Path) -> list[VerifierKey]:
    """Read a file of verifier keys (``<name>+<key id hex>+<base64 key>``, one a line)."""
    return _read_key_lines(path, VerifierKey.decode, "verifier keys file")


def load_signer_keys(path: Path) -> list[SignerKey]:
    """Read every signer key in ``path``; raises ``KeyFileError`` naming the file and the fault."""
    _check_permissions(path)
    keys: list[SignerKey] = _read_key_lines(path, SignerKey.decode, "signing key file")
    ids = [(k.name, k.key_id) for k in keys]
    if len(set(ids)) != len(ids):
        raise KeyFileError(f"signing key file {path} holds the same key twice")
    return keys


def write_signer_keys(path: Path, keys: list[SignerKey]) -> None:
    """Atomically replace ``path`` with ``keys``, created with mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(key.encode() + "\n" for key in keys))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def trust_verifier_keys(path: Path, keys: list[VerifierKey]) -> list[VerifierKey]:
    """Add ``keys`` to the trusted keys file ``path`` (created if missing, mode 0644: public keys);
    returns those that were not there yet. The file is replaced atomically; comments are kept."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    keyed = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    present = {VerifierKey.decode(line).encode() for line in keyed}
    added = [key for key in keys if key.encode() not in present]
    if not added:
        return []
    if not lines:
        lines = ["# Verifier keys the ledger's verification trusts (C2SP signed-note), one a line."]
    lines += [key.encode() for key in added]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return added
