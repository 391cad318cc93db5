"""PAdES signing of a rendered report with pyHanko, in a form common PDF readers validate
(Acrobat, poppler's ``pdfsig``, NSS): an ECDSA (P-256 by default) or RSA key, SHA-256, the
certificate chain embedded, a certification signature that permits no later change, at a given
signing time. Baseline B-B; B-T (a signature timestamp token from an RFC 3161 authority) when a
timestamper is given.

Ed25519 is refused for new signatures: Poppler, NSS and Acrobat answer "not signed or corrupted".
Reports signed with it before stay verifiable (``verification`` accepts any key pyHanko checks).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.signers.pdf_signer import PdfSigningSession
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from audits.reports.pdf.document import utc

SIGNATURE_FIELD = "ReportSignature"
# The curves and RSA sizes readers validate; P-256 is the default key.
SIGNING_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
MIN_RSA_BITS = 2048

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def signing_key_problem(private_key: Any) -> str | None:
    """Why ``private_key`` cannot sign reports readers validate, or ``None`` when it can."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, SIGNING_CURVES):
            return f"an ECDSA key on curve {private_key.curve.name}: use P-256 (or P-384, P-521)"
        return None
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {private_key.key_size} bits: use at least {MIN_RSA_BITS}"
        return None
    if isinstance(private_key, Ed25519PrivateKey):
        return "an Ed25519 key: PDF readers do not validate Ed25519 signatures; use an ECDSA P-256 or RSA key"
    return f"a {type(private_key).__name__}: use an ECDSA P-256 or RSA key"


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def service_certificate(
    private_key: Any,
    *,
    common_name: str,
    valid_from: datetime,
    valid_to: datetime,
    organisation: str | None = None,
    unit: str | None = None,
) -> x509.Certificate:
    """A self-signed certificate for ``private_key``, for signing reports. The serial number is
    derived from the public key, so one key gives one serial (ECDSA signatures themselves are
    randomised). Verifiers trust it by being handed it, not through a CA: an organisation that
    wants readers to trust its reports installs a CA-issued certificate instead."""
    public = private_key.public_key()
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(hashlib.sha256(b"report-signing-certificate\n" + spki).digest()[:16], "big") >> 1
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    name = x509.Name(attributes)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial or 1)
        .not_valid_before(utc(valid_from, "valid_from"))
        .not_valid_after(utc(valid_to, "valid_to"))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(private_key, None if isinstance(private_key, Ed25519PrivateKey) else SHA256())
    )


def asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


def timestamper(url: str, *, timeout: float = 10) -> TimeStamper:
    """An RFC 3161 client for ``url`` (pyHanko's ``HTTPTimeStamper``)."""
    return HTTPTimeStamper(url, timeout=timeout)


class _PdfSignerAt(signers.PdfSigner):
    """pyHanko takes the signing time from the wall clock; a report is signed at a given time."""

    def __init__(self, *args: Any, signed_at: datetime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signed_at = signed_at

    def init_signing_session(self, pdf_out: BasePdfFileWriter, existing_fields_only: bool = False) -> PdfSigningSession:
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._signed_at
        return session


def sign_pdf(
    pdf: bytes,
    *,
    private_key: SigningKey,
    certificate: x509.Certificate,
    reason: str,
    signed_at: datetime,
    chain: Sequence[x509.Certificate] = (),
    timestamps: TimeStamper | None = None,
) -> bytes:
    """Sign ``pdf`` as PAdES (B-B; B-T with ``timestamps``) with an ECDSA or RSA key, SHA-256,
    as a certification signature that permits no later change. ``chain`` holds the intermediate
    CA certificates between ``certificate`` and its root; they are embedded so a reader that
    trusts the root can build the path. The signature covers the whole file as given; anything
    appended afterwards shows up in ``verify_pdf_signature``. A timestamp authority that fails
    raises (pyHanko's ``TimestampRequestError``): no PDF is silently left without its timestamp."""
    problem = signing_key_problem(private_key)
    if problem is not None:
        raise ValueError(f"cannot sign reports with {problem}")
    signed_at = utc(signed_at, "signed_at")
    cert = asn1_certificate(certificate)
    key = asn1_keys.PrivateKeyInfo.load(private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()))
    signer = signers.SimpleSigner(
        signing_cert=cert,
        signing_key=key,
        cert_registry=SimpleCertificateStore.from_certs([cert, *(asn1_certificate(c) for c in chain)]),
    )
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        reason=reason,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    output = _PdfSignerAt(meta, signer, signed_at=signed_at, timestamper=timestamps).sign_pdf(writer)
    return output.getvalue()
