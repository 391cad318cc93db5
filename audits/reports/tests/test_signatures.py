"""Report signatures that readers validate: ECDSA under the service's certificate, checked by
poppler's ``pdfsig`` (NSS) as well as by pyHanko; an organisation's CA chain trusted through an
NSS database holding its root; an RFC 3161 timestamp from a local authority answered by
``openssl ts`` (independent of pyHanko); misconfigurations refused with the setting named.

The CA, the TSA and the PDFs are made here with ``cryptography``; nothing is fetched.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko_certvalidator.registry import SimpleCertificateStore

from audits.ledger.keys import SignerKey
from audits.ledger.notes import Checkpoint, sign
from audits.reports.checks import check_report_signing
from audits.reports.models import ReportRun, ReportState
from audits.reports.pdf import Paragraph, Report, build_pdf, service_certificate, verify_pdf_signature
from audits.reports.pdf.signing import asn1_certificate
from audits.reports.pdf.verification import MODIFIED_AFTER_SIGNING, SIGNATURE_INVALID, TIMESTAMP_INVALID
from audits.reports.services import (
    report_generate,
    report_request,
    report_signing_problem,
    sign_report_pdf,
    trusted_certificates,
)
from common.errors import DomainError
from conftest import require_tool

NOW = datetime.now(UTC).replace(microsecond=0)
VALID = "Signature Validation: Signature is Valid."
TRUSTED = "Certificate Validation: Certificate is Trusted."
# NSS trust flags (SSL, S/MIME, code signing): pdfsig checks a signer for the S/MIME (email
# signer) usage, so a root trusted "C,," only (SSL) leaves the issuer untrusted.
NSS_TRUST = "C,C,"


# ------------------------------------------------------------------------------------------------
# A test CA (root, intermediate, leaf), a TSA certificate under the same root


@dataclass(frozen=True)
class Issued:
    key: Any
    certificate: x509.Certificate


def _issue(
    name: str, *, key: Any = None, issuer: Issued | None = None, ca: bool = False, timestamping: bool = False
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org")]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=2))
        .not_valid_after(NOW + timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca and not timestamping,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.certificate.public_key()), critical=False
        )
    if timestamping:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return Issued(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))


@dataclass(frozen=True)
class Chain:
    root: Issued
    intermediate: Issued
    leaf: Issued
    tsa_root: Issued
    tsa: Issued


@pytest.fixture(scope="module")
def ca() -> Chain:
    root = _issue("Test Root CA", ca=True)
    intermediate = _issue("Test Issuing CA", issuer=root, ca=True)
    tsa_root = _issue("Test TSA Root CA", ca=True)
    return Chain(
        root=root,
        intermediate=intermediate,
        leaf=_issue("Test Org compliance reports", issuer=intermediate),
        tsa_root=tsa_root,
        tsa=_issue("Test Timestamp Authority", issuer=tsa_root, timestamping=True),
    )


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def _write_key(path: Path, key: Any, mode: int = 0o600) -> Path:
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(path, mode)
    return path


def _configure(settings: Any, folder: Path, *, key: Any, certificates: bytes, anchors: bytes | None) -> None:
    """Point the report-signing settings at files in ``folder``; the rest stays the session's."""
    folder.mkdir(parents=True, exist_ok=True)
    settings.REPORTS_SIGNING_KEY_FILE = _write_key(folder / "key.pem", key)
    (folder / "chain.pem").write_bytes(certificates)
    settings.REPORTS_SIGNING_CERTIFICATE_FILE = folder / "chain.pem"
    if anchors is not None:
        (folder / "anchors.pem").write_bytes(anchors)
    settings.REPORTS_TRUST_ANCHORS_FILE = folder / "anchors.pem" if anchors is not None else None
    settings.REPORTS_CERTIFICATE_FILE = folder / "signed-under.pem"


@pytest.fixture
def ca_configured(settings: Any, tmp_path: Path, ca: Chain) -> Chain:
    _configure(
        settings, tmp_path / "ca", key=ca.leaf.key, certificates=_pem(ca.leaf.certificate, ca.intermediate.certificate),
        anchors=_pem(ca.root.certificate, ca.tsa_root.certificate),
    )  # fmt: skip
    return ca


# ------------------------------------------------------------------------------------------------
# A small report, pdfsig and NSS databases


@pytest.fixture(scope="module")
def pdf() -> bytes:
    key = SignerKey.generate("signatures.test/ledger")
    checkpoint = sign(Checkpoint(origin="signatures.test/ledger", size=3, root=hashlib.sha256(b"r").digest()), [key])
    return build_pdf(
        Report(
            title="Signature test",
            scope="one page",
            period_start=date(2026, 1, 1),
            period_end=date(2026, 1, 31),
            generated_at=NOW,
            checkpoint_text=checkpoint,
            kind="governance_audit",
            report_id="sig-1",
            sections=[Paragraph("A report readers validate.")],
        )
    )


def _nss(folder: Path, *roots: x509.Certificate) -> str:
    require_tool(shutil.which("certutil") is not None, "certutil (libnss3-tools)")
    folder.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{folder}"], check=True, capture_output=True)
    for n, root in enumerate(roots):
        (folder / f"root{n}.pem").write_bytes(_pem(root))
        command = ["certutil", "-A", "-n", f"root{n}", "-t", NSS_TRUST, "-i", str(folder / f"root{n}.pem")]
        subprocess.run([*command, "-d", f"sql:{folder}"], check=True, capture_output=True)
    return f"sql:{folder}"


def _pdfsig(signed: bytes, folder: Path, nssdir: str) -> str:
    require_tool(shutil.which("pdfsig") is not None, "pdfsig (poppler-utils)")
    path = folder / "signed.pdf"
    path.write_bytes(signed)
    # Not -no-ocsp: poppler 22.12 then answers "Unknown issue with Certificate" for a chain NSS
    # trusts. Nothing is fetched anyway: no certificate here names an OCSP responder (no AIA).
    result = subprocess.run(["pdfsig", "-nssdir", nssdir, str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def _flip_content_byte(signed: bytes) -> bytes:
    start = signed.index(b"stream\n", signed.index(b"/Type /Page")) + len(b"stream\n")
    tampered = bytearray(signed)
    tampered[start + 20] ^= 0x01
    return bytes(tampered)


# ------------------------------------------------------------------------------------------------
# The embedded default


def test_the_embedded_default_key_signs_what_pdfsig_validates_untrusted(
    settings: Any, tmp_path: Path, pdf: bytes
) -> None:
    settings.VAR_DIR = tmp_path
    settings.REPORTS_SIGNING_KEY_FILE = tmp_path / "keys" / "report-signing-key.pem"
    settings.REPORTS_SIGNING_CERTIFICATE_FILE = tmp_path / "keys" / "report-signing-certificate.pem"
    settings.REPORTS_CERTIFICATE_FILE = tmp_path / "keys" / "reports-certificate.pem"
    settings.REPORTS_TRUST_ANCHORS_FILE = None
    assert report_signing_problem() is None  # not made yet is not a problem: it is made on first use

    signed = sign_report_pdf(pdf, reason="embedded default", signed_at=NOW)

    key_file = settings.REPORTS_SIGNING_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    (certificate,) = x509.load_pem_x509_certificates(settings.REPORTS_SIGNING_CERTIFICATE_FILE.read_bytes())
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert certificate.public_key().curve.name == "secp256r1"
    assert "self-signed" in certificate.subject.rfc4514_string()
    assert "not issued by a certificate authority" in certificate.subject.rfc4514_string()
    assert trusted_certificates() == [certificate]  # recorded among the certificates reports were signed under

    check = verify_pdf_signature(signed, trusted=trusted_certificates())
    assert check.ok, check.reason
    assert check.timestamped_at is None
    out = _pdfsig(signed, tmp_path, _nss(tmp_path / "nss"))
    assert VALID in out, out
    assert "Signing Hash Algorithm: SHA-256" in out, out
    assert "Certificate Validation:" in out and TRUSTED not in out, out
    # A second signature reuses the key and certificate it made.
    sign_report_pdf(pdf, reason="again", signed_at=NOW)
    assert trusted_certificates() == [certificate]
    assert report_signing_problem() is None


def test_a_report_signed_before_with_ed25519_still_verifies(pdf: bytes) -> None:
    """What the service signed before this change (pyHanko, Ed25519, SHA-512) stays verifiable."""
    key = Ed25519PrivateKey.generate()
    certificate = service_certificate(key, common_name="old reports", valid_from=NOW - timedelta(days=1),
                                      valid_to=NOW + timedelta(days=30))  # fmt: skip
    cert = asn1_certificate(certificate)
    signer = signers.SimpleSigner(
        signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs([cert]),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())),
    )  # fmt: skip
    meta = signers.PdfSignatureMetadata(field_name="Old", md_algorithm="sha512", subfilter=SigSeedSubFilter.PADES)
    old = signers.PdfSigner(meta, signer).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf))).getvalue()
    assert verify_pdf_signature(old, trusted=[certificate]).ok


# ------------------------------------------------------------------------------------------------
# An organisation's CA chain


@pytest.mark.django_db
def test_a_ca_issued_chain_is_trusted_by_pdfsig_pyhanko_and_report_verify(ca_configured: Chain, tmp_path: Path) -> None:
    ca = ca_configured
    system = get_user_model().objects.create_superuser(username="signatures-admin")
    run = report_request(actor=system, kind="governance_audit", period_start=date.today() - timedelta(days=1),
                         period_end=date.today())  # fmt: skip
    done = report_generate(report_pk=run.pk)
    assert done is not None and done.state == ReportState.DONE, done.error if done else "not claimed"
    from audits.reports.services import report_pdf

    signed = report_pdf(done)
    (signature,) = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    embedded = {choice.chosen.dump() for choice in signature.signed_data["certificates"]}
    assert asn1_certificate(ca.intermediate.certificate).dump() in embedded  # the chain travels in the PDF

    trusted_nss = _nss(tmp_path / "nss-root", ca.root.certificate)
    out = _pdfsig(signed, tmp_path, trusted_nss)
    assert VALID in out and TRUSTED in out, out
    assert "Test Org compliance reports" in out
    untrusted = _pdfsig(signed, tmp_path, _nss(tmp_path / "nss-empty"))
    assert VALID in untrusted and TRUSTED not in untrusted, untrusted

    check = verify_pdf_signature(signed, trusted=trusted_certificates())
    assert check.ok, check.reason
    assert check.signer and "Test Org compliance reports" in check.signer
    assert verify_pdf_signature(signed, trusted=[ca.root.certificate]).ok  # the root alone suffices
    assert not verify_pdf_signature(signed, trusted=[ca.tsa.certificate]).ok
    path = tmp_path / "report.pdf"
    path.write_bytes(signed)
    stdout = io.StringIO()
    call_command("report", "verify", str(path), stdout=stdout)
    assert "signature: valid, by" in stdout.getvalue() and "Test Org compliance reports" in stdout.getvalue()

    # One flipped byte inside the signed content: every verifier says so.
    tampered = _flip_content_byte(signed)
    out = _pdfsig(tampered, tmp_path, trusted_nss)
    assert VALID not in out and "Signature Validation:" in out, out
    check = verify_pdf_signature(tampered, trusted=trusted_certificates())
    assert not check.ok and check.reason and check.reason.startswith((MODIFIED_AFTER_SIGNING, SIGNATURE_INVALID))
    path.write_bytes(tampered)
    with pytest.raises(CommandError, match="FAILED: signature: "):
        call_command("report", "verify", str(path), stdout=io.StringIO())


def test_an_rsa_key_is_accepted(settings: Any, tmp_path: Path, ca: Chain, pdf: bytes) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_leaf = _issue("Test Org RSA reports", key=key, issuer=ca.intermediate)
    chain = _pem(rsa_leaf.certificate, ca.intermediate.certificate)
    _configure(settings, tmp_path, key=key, certificates=chain, anchors=_pem(ca.root.certificate))
    signed = sign_report_pdf(pdf, reason="rsa", signed_at=NOW)
    assert verify_pdf_signature(signed, trusted=trusted_certificates()).ok
    out = _pdfsig(signed, tmp_path, _nss(tmp_path / "nss", ca.root.certificate))
    assert VALID in out and TRUSTED in out, out


# ------------------------------------------------------------------------------------------------
# Misconfigurations: refused at signing, and by the system check, with the setting named


def _other_root() -> Issued:
    return _issue("Another Root CA", ca=True)


BAD = {
    "ed25519 key": ("REPORTS_SIGNING_KEY_FILE", "Ed25519"),
    "key and certificate differ": ("REPORTS_SIGNING_CERTIFICATE_FILE", "is not the certificate of the key"),
    "key file missing": ("REPORTS_SIGNING_KEY_FILE", "cannot read"),
    "key readable by others": ("REPORTS_SIGNING_KEY_FILE", "readable by others"),
    "certificate file garbage": ("REPORTS_SIGNING_CERTIFICATE_FILE", "not a file of PEM certificates"),
    "chain ends elsewhere": ("REPORTS_SIGNING_CERTIFICATE_FILE", "is not a certificate in REPORTS_TRUST_ANCHORS_FILE"),
    "no anchors for a CA chain": ("REPORTS_TRUST_ANCHORS_FILE", "not set, but"),
    "chain out of order": ("REPORTS_SIGNING_CERTIFICATE_FILE", "is not issued by the certificate after it"),
    "anchors file missing": ("REPORTS_TRUST_ANCHORS_FILE", "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_signing_configuration_is_refused_naming_the_setting(
    case: str, ca_configured: Chain, settings: Any, pdf: bytes
) -> None:
    ca = ca_configured
    folder = Path(settings.REPORTS_SIGNING_KEY_FILE).parent
    if case == "ed25519 key":
        _write_key(settings.REPORTS_SIGNING_KEY_FILE, Ed25519PrivateKey.generate())
    elif case == "key and certificate differ":
        _write_key(settings.REPORTS_SIGNING_KEY_FILE, ec.generate_private_key(ec.SECP256R1()))
    elif case == "key file missing":
        settings.REPORTS_SIGNING_KEY_FILE = folder / "absent.pem"
    elif case == "key readable by others":
        os.chmod(settings.REPORTS_SIGNING_KEY_FILE, 0o644)
    elif case == "certificate file garbage":
        settings.REPORTS_SIGNING_CERTIFICATE_FILE.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    elif case == "chain ends elsewhere":
        (folder / "anchors.pem").write_bytes(_pem(_other_root().certificate))
    elif case == "no anchors for a CA chain":
        settings.REPORTS_TRUST_ANCHORS_FILE = None
    elif case == "chain out of order":
        settings.REPORTS_SIGNING_CERTIFICATE_FILE.write_bytes(_pem(ca.leaf.certificate, ca.root.certificate))
    elif case == "anchors file missing":
        settings.REPORTS_TRUST_ANCHORS_FILE = folder / "absent-anchors.pem"
    setting, words = BAD[case]
    with pytest.raises(DomainError) as raised:
        sign_report_pdf(pdf, reason="refused", signed_at=NOW)
    assert raised.value.code == "report_signing_misconfigured"
    assert raised.value.message.startswith(f"{setting}: ") and words in raised.value.message, raised.value.message
    problem = report_signing_problem()
    assert problem is not None and problem.startswith(f"{setting}: "), problem
    (error,) = check_report_signing()  # what `manage.py check` reports
    assert error.id == "reports.E001" and error.msg == problem


def test_the_configured_chain_passes_the_check(ca_configured: Chain) -> None:
    assert report_signing_problem() is None
    assert check_report_signing() == []


# ------------------------------------------------------------------------------------------------
# An RFC 3161 timestamp authority: openssl ts behind http.server


TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa-key.pem
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@pytest.fixture(scope="module")
def tsa_url(ca: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_tool(shutil.which("openssl") is not None, "openssl")
    folder = tmp_path_factory.mktemp("tsa")
    (folder / "tsa.pem").write_bytes(_pem(ca.tsa.certificate))
    _write_key(folder / "tsa-key.pem", ca.tsa.key)
    (folder / "serial").write_text("01\n")
    (folder / "tsa.cnf").write_text(TSA_CONFIG.format(dir=folder))
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                (folder / "request.tsq").write_bytes(query)
                result = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", str(folder / "tsa.cnf"), "-queryfile",
                     str(folder / "request.tsq"), "-out", str(folder / "reply.tsr")],
                    capture_output=True, timeout=30,
                )  # fmt: skip
                reply = (folder / "reply.tsr").read_bytes() if result.returncode == 0 else b""
            self.send_response(200 if reply else 500)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        server.shutdown()
        server.server_close()


def test_a_timestamp_authority_makes_the_signature_b_t(
    ca_configured: Chain, settings: Any, tsa_url: str, tmp_path: Path, pdf: bytes
) -> None:
    ca = ca_configured
    settings.REPORTS_TIMESTAMP_URL = tsa_url
    signed = sign_report_pdf(pdf, reason="timestamped", signed_at=NOW)

    (signature,) = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    unsigned = signature.signer_info["unsigned_attrs"]
    assert [a["type"].native for a in unsigned] == ["signature_time_stamp_token"]
    check = verify_pdf_signature(signed, trusted=trusted_certificates())
    assert check.ok, check.reason
    assert check.timestamped_at is not None and abs(check.timestamped_at - datetime.now(UTC)) < timedelta(minutes=5)
    # The timestamp is checked too: a verifier that trusts the signer but not the TSA's root says so.
    check = verify_pdf_signature(signed, trusted=[ca.leaf.certificate])
    assert not check.ok and check.reason and check.reason.startswith(TIMESTAMP_INVALID), check.reason
    assert "Test Timestamp Authority" in check.reason

    out = _pdfsig(signed, tmp_path, _nss(tmp_path / "nss", ca.root.certificate))
    assert VALID in out and TRUSTED in out, out  # pdfsig (poppler 22.12) does not print timestamps
    # OpenSSL, independently of pyHanko: the token is the TSA's, over the hash of the signature value.
    token = tmp_path / "token.der"
    token.write_bytes(unsigned[0]["values"][0].dump())
    imprint = hashlib.sha256(signature.signer_info["signature"].native).hexdigest()
    (tmp_path / "tsa-root.pem").write_bytes(_pem(ca.tsa_root.certificate))
    result = subprocess.run(
        ["openssl", "ts", "-verify", "-token_in", "-in", str(token), "-digest", imprint, "-CAfile",
         str(tmp_path / "tsa-root.pem")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_a_timestamp_the_verifier_would_refuse_fails_the_signing(
    ca_configured: Chain, settings: Any, tsa_url: str, pdf: bytes
) -> None:
    settings.REPORTS_TIMESTAMP_URL = tsa_url
    settings.REPORTS_TRUST_ANCHORS_FILE.write_bytes(_pem(ca_configured.root.certificate))  # not the TSA's root
    with pytest.raises(DomainError) as raised:
        sign_report_pdf(pdf, reason="refused", signed_at=NOW)
    assert raised.value.message.startswith("REPORTS_TRUST_ANCHORS_FILE: the signed PDF does not verify")
    assert TIMESTAMP_INVALID in raised.value.message and "Test Timestamp Authority" in raised.value.message


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db
def test_a_timestamp_authority_that_is_down_fails_the_run_naming_it(ca_configured: Chain, settings: Any) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/tsa"
    settings.REPORTS_TIMESTAMP_URL = url
    system = get_user_model().objects.create_superuser(username="signatures-admin")
    run = report_request(actor=system, kind="governance_audit", period_start=date.today() - timedelta(days=1),
                         period_end=date.today())  # fmt: skip
    failed = report_generate(report_pk=run.pk)
    assert failed is not None and failed.state == ReportState.FAILED
    assert failed.error.startswith(f"REPORTS_TIMESTAMP_URL: the timestamp authority {url} gave no timestamp"), (
        failed.error
    )
    assert not ReportRun.objects.get(pk=run.pk).pdf_sha256
