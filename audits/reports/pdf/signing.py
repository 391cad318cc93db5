"""PAdES signing of a rendered report with pyHanko: baseline B-B, Ed25519, a certification
signature that permits no later change, at a given signing time."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.signers.pdf_signer import PdfSigningSession
from pyhanko_certvalidator.registry import SimpleCertificateStore

from audits.ledger.keys import SignerKey
from audits.reports.pdf.document import utc

SIGNATURE_FIELD = "ReportSignature"


def private_key_from_signer(signer: SignerKey) -> Ed25519PrivateKey:
    """The Ed25519 key of a ledger signer key, to sign reports with the key that signs checkpoints."""
    return signer.private_key


def service_certificate(
    private_key: Ed25519PrivateKey, *, common_name: str, valid_from: datetime, valid_to: datetime
) -> x509.Certificate:
    """A self-signed certificate for ``private_key``, for signing reports. The serial number is
    derived from the public key, so the same key and inputs give the same certificate (Ed25519
    signatures are deterministic). Verifiers trust it by being handed it, not through a CA."""
    public = private_key.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    serial = int.from_bytes(hashlib.sha256(b"report-signing-certificate\n" + raw).digest()[:16], "big") >> 1
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
        .sign(private_key, None)
    )


def asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


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
    pdf: bytes, *, private_key: Ed25519PrivateKey, certificate: x509.Certificate, reason: str, signed_at: datetime
) -> bytes:
    """Sign ``pdf`` as PAdES baseline B-B with Ed25519 (SHA-512 message digest, RFC 8419) as a
    certification signature that permits no later change. The signature covers the whole file
    as given; anything appended afterwards shows up in ``verify_pdf_signature``."""
    signed_at = utc(signed_at, "signed_at")
    cert = asn1_certificate(certificate)
    key = asn1_keys.PrivateKeyInfo.load(private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()))
    signer = signers.SimpleSigner(
        signing_cert=cert, signing_key=key, cert_registry=SimpleCertificateStore.from_certs([cert])
    )
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        reason=reason,
        md_algorithm="sha512",
        subfilter=SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    output = _PdfSignerAt(meta, signer, signed_at=signed_at).sign_pdf(writer)
    return output.getvalue()
