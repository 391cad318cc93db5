"""The report-signing key and certificate chain, read from their files and checked; the embedded
default's self-signed pair generated on first use. No Django: the caller passes the paths.

A misconfiguration raises ``SigningConfigError`` whose message starts with the setting at fault:
an unreadable or malformed file, a key readers cannot validate (Ed25519 among them), a group- or
world-readable key, a certificate that is not the key's, a certificate out of its validity period,
a chain whose links do not verify or that does not end at a configured trust anchor.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from audits.reports.pdf.signing import SigningKey, generate_signing_key, service_certificate, signing_key_problem

KEY_SETTING = "REPORTS_SIGNING_KEY_FILE"
CERTIFICATE_SETTING = "REPORTS_SIGNING_CERTIFICATE_FILE"
ANCHORS_SETTING = "REPORTS_TRUST_ANCHORS_FILE"
CERTIFICATE_YEARS = 10


class SigningConfigError(ValueError):
    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


@dataclass(frozen=True)
class SigningIdentity:
    """The key, its certificate and the intermediate CA certificates up to (not including) a root."""

    private_key: SigningKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


def load_private_key(path: Path) -> SigningKey:
    data = _read(path, KEY_SETTING)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningConfigError(
            KEY_SETTING, f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): make it 0600"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningConfigError(KEY_SETTING, f"{path} holds an encrypted key: give an unencrypted PEM") from None
    except Exception as exc:  # cryptography raises ValueError or UnsupportedAlgorithm: either way not a key
        raise SigningConfigError(KEY_SETTING, f"{path} is not a PEM private key ({exc})") from None
    problem = signing_key_problem(key)
    if problem is not None:
        raise SigningConfigError(KEY_SETTING, f"{path} holds {problem}")
    return key  # type: ignore[return-value]


def load_certificates(path: Path, setting: str) -> list[x509.Certificate]:
    data = _read(path, setting)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SigningConfigError(setting, f"{path} is not a file of PEM certificates ({exc})") from None
    return list(certificates)


def _public(certificate_or_key: x509.Certificate | SigningKey) -> bytes:
    key = certificate_or_key.public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def check_identity(
    private_key: SigningKey,
    certificates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    now: datetime,
    certificate_path: Path,
) -> SigningIdentity:
    """``certificates`` as read from the certificate file (leaf first) checked against the key and
    the trust anchors. A lone self-signed certificate needs no anchor: the service trusts it
    itself (``REPORTS_CERTIFICATE_FILE``). A CA-issued one must chain, link by link, to a
    certificate in ``anchors``."""
    if not certificates:
        raise SigningConfigError(CERTIFICATE_SETTING, f"{certificate_path} holds no certificate")
    leaf, *intermediates = certificates
    if _public(leaf) != _public(private_key):
        raise SigningConfigError(
            CERTIFICATE_SETTING,
            f"the first certificate in {certificate_path} ({_name(leaf)}) is not the certificate of the key in "
            f"{KEY_SETTING}",
        )
    for certificate in certificates:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SigningConfigError(
                CERTIFICATE_SETTING,
                f"{_name(certificate)} in {certificate_path} is valid from "
                f"{certificate.not_valid_before_utc.isoformat()} to {certificate.not_valid_after_utc.isoformat()}, "
                f"not now ({now.isoformat()})",
            )
    for certificate, issuer in zip(certificates, intermediates, strict=False):
        if not _issued_by(certificate, issuer):
            raise SigningConfigError(
                CERTIFICATE_SETTING,
                f"{_name(certificate)} in {certificate_path} is not issued by the certificate after it "
                f"({_name(issuer)}): put the leaf first, then each issuer in order",
            )
    last = certificates[-1]
    if not intermediates and last.issuer == last.subject and _issued_by(last, last):
        return SigningIdentity(private_key=private_key, certificate=leaf, chain=())
    if not anchors:
        raise SigningConfigError(
            ANCHORS_SETTING,
            f"not set, but the certificate in {CERTIFICATE_SETTING} is issued by {last.issuer.rfc4514_string()}: "
            "set it to a file holding that root CA certificate",
        )
    top = [a for a in anchors if a == last or _issued_by(last, a)]
    if not top:
        raise SigningConfigError(
            CERTIFICATE_SETTING,
            f"the chain in {certificate_path} ends at {_name(last)}, issued by {last.issuer.rfc4514_string()}, which "
            f"is not a certificate in {ANCHORS_SETTING}",
        )
    chain = tuple(c for c in intermediates if c not in anchors)
    return SigningIdentity(private_key=private_key, certificate=leaf, chain=chain)


def embedded_certificate(private_key: SigningKey, *, origin: str, now: datetime) -> x509.Certificate:
    """The embedded default's self-signed certificate: its subject says plainly what it is."""
    suffix = " reports (self-signed)"
    return service_certificate(
        private_key,
        common_name=origin[: 64 - len(suffix)] + suffix,
        organisation="not issued by a certificate authority (embedded default)",
        unit="replace it with a certificate from your CA",  # how: docs/configuration.md (64 characters at most)
        valid_from=now - timedelta(days=1),
        valid_to=now + timedelta(days=365 * CERTIFICATE_YEARS),
    )


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` unless it exists (another process won the race): whether it wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def ensure_embedded_default(key_path: Path, certificate_path: Path, *, origin: str, now: datetime) -> None:
    """Generate what the embedded default lacks: a P-256 key (mode 0600) and, for the key there,
    a self-signed certificate. An existing key is never overwritten; a certificate is replaced
    only by the process that made a new key (a certificate restored without its key is of no use:
    the service keeps it among the certificates reports were signed under)."""
    made_key = False
    if not key_path.exists():
        key = generate_signing_key()
        made_key = _write_new(key_path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600)
    if made_key or not certificate_path.exists():
        certificate = embedded_certificate(load_private_key(key_path), origin=origin, now=now)
        tmp = certificate_path.with_name(f".{certificate_path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        _write_new(tmp, certificate.public_bytes(Encoding.PEM), 0o644)
        os.replace(tmp, certificate_path)
