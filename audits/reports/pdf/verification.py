"""Reading a report back (its embedded ``report.json``) and verifying its PAdES signature against
trusted certificates, offline: nothing fetched, no revocation checked. A signature timestamp
(PAdES B-T), when the signature carries one, is validated too: its authority's certificate must
chain to a trusted one."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import EmbeddedPdfSignature, SignatureCoverageLevel, validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from audits.reports.pdf.document import (
    METADATA_FILENAME,
    METADATA_FORMAT,
    Claim,
    ReportInfo,
    ReportPdfError,
    receipt_filename,
    utc,
)
from audits.reports.pdf.signing import asn1_certificate

# The reasons verify_pdf_signature gives, each followed by ": <detail>" where there is one.
NO_SIGNATURE = "no signature"
SIGNATURE_INVALID = "signature does not verify"
MODIFIED_AFTER_SIGNING = "the document was modified after signing"
UNTRUSTED_SIGNER = "signer certificate is not among the trusted ones"
CERTIFICATE_NOT_VALID = "signer certificate is not valid at the time checked"
TIMESTAMP_INVALID = "signature timestamp does not verify"
UNREADABLE = "not a readable PDF"


@dataclass(frozen=True)
class SignatureCheck:
    """``reason`` starts with one of the module's reason constants; ``signer`` is the signing
    certificate's subject and ``signed_at`` the signer's claimed time, when a signature was read;
    ``timestamped_at`` the time of its validated signature timestamp token, when it carries one."""

    ok: bool
    reason: str | None = None
    signer: str | None = None
    signed_at: datetime | None = None
    timestamped_at: datetime | None = None


def _reader(pdf: bytes) -> PdfFileReader:
    return PdfFileReader(io.BytesIO(pdf), strict=False)


def _embedded_file(reader: PdfFileReader, filename: str) -> bytes | None:
    try:
        tree = reader.root["/Names"]["/EmbeddedFiles"]
    except KeyError:
        return None
    pending = [tree]
    while pending:
        node = pending.pop()
        if "/Kids" in node:
            pending.extend(kid.get_object() for kid in node["/Kids"])
        names = node.get("/Names")
        if names is None:
            continue
        for i in range(0, len(names) - 1, 2):
            if str(names[i]) == filename:
                return bytes(names[i + 1].get_object()["/EF"]["/F"].get_object().data)
    return None


def read_attachment(pdf: bytes, filename: str) -> bytes | None:
    """An embedded file of ``pdf`` by name (``None`` when it holds none): unchecked, like
    ``read_pdf``."""
    try:
        return _embedded_file(_reader(pdf), filename)
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise ReportPdfError(f"{UNREADABLE}: {exc}") from None


def read_receipts(pdf: bytes) -> dict[int, bytes]:
    """The SCITT receipts embedded in ``pdf``, by ledger index, as its ``report.json`` lists them;
    unchecked, like ``read_pdf`` (``llmops_ledger_verify.receipt.verify_receipt`` checks each)."""
    info = read_pdf(pdf)
    found: dict[int, bytes] = {}
    try:
        reader = _reader(pdf)
        files = {index: _embedded_file(reader, receipt_filename(index)) for index in info.receipt_indexes}
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise ReportPdfError(f"{UNREADABLE}: {exc}") from None
    for index, data in files.items():
        if data is None:
            raise ReportPdfError(f"{METADATA_FILENAME} lists a receipt of entry {index}, but the PDF holds none")
        found[index] = data
    return found


def read_pdf(pdf: bytes) -> ReportInfo:
    """The report metadata embedded in ``pdf``. It reads the latest revision and checks nothing:
    call ``verify_pdf_signature`` first to know the metadata is what the service signed."""
    try:
        reader = _reader(pdf)
        payload = _embedded_file(reader, METADATA_FILENAME)
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        raise ReportPdfError(f"{UNREADABLE}: {exc}") from None
    if payload is None:
        raise ReportPdfError(f"the PDF holds no {METADATA_FILENAME}: not a report of this service")
    try:
        data = json.loads(payload)
        if data.get("format") != METADATA_FORMAT:
            raise ReportPdfError(f"unknown report metadata format {data.get('format')!r}")
        return ReportInfo(
            format=data["format"],
            kind=data["kind"],
            report_id=data["report_id"],
            title=data["title"],
            scope=data["scope"],
            period_start=data["period_start"],
            period_end=data["period_end"],
            generated_at=datetime.fromisoformat(data["generated_at"]),
            checkpoint_text=data["checkpoint"],
            cited_indexes=tuple(int(i) for i in data["cited_ledger_indexes"]),
            claims=tuple(
                Claim(fact=str(c["fact"]), entry=int(c["entry"]), field=str(c["field"]), value=c["value"])
                for c in data.get("claims", ())
            ),
            draft_notice=str(data.get("draft_notice", "")),
            receipt_indexes=tuple(sorted(int(i) for i in data.get("ledger_receipts", {}).get("files", {}))),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ReportPdfError):
            raise
        raise ReportPdfError(f"{METADATA_FILENAME} is malformed: {exc!r}") from None


def verify_pdf_signature(
    pdf: bytes, *, trusted: Sequence[x509.Certificate], at: datetime | None = None
) -> SignatureCheck:
    """Check that ``pdf`` carries a signature that verifies, covers every byte of the file, and
    was made with a certificate in ``trusted`` (or issued under one). The signer's certificate
    must be valid at ``at``, or, when ``at`` is not given, at the signing time the signature
    claims: a B-B signature carries no timestamp, and an archived report should not turn invalid
    the day its certificate expires (a signature timestamp, when present, is the time checked
    instead). ``trusted`` holds trust anchors: self-signed service certificates, root CAs, the
    timestamp authority's root. Nothing is fetched from the network and no revocation is checked.
    The first failure wins, in this order: unreadable, no signature, signed bytes altered,
    signature invalid, modified after signing, untrusted signer, timestamp invalid, certificate
    not valid.
    """
    at = utc(at, "at") if at is not None else None
    try:
        reader = _reader(pdf)
        signatures = reader.embedded_signatures
    except (PdfError, KeyError, TypeError, ValueError) as exc:
        return SignatureCheck(ok=False, reason=f"{UNREADABLE}: {exc}")
    if not signatures:
        return SignatureCheck(ok=False, reason=NO_SIGNATURE)
    roots = [asn1_certificate(c) for c in trusted]
    checks = [_check_one(signature, roots, at) for signature in signatures]
    failed = [check for check in checks if not check.ok]
    return failed[0] if failed else checks[-1]


def _check_one(embedded: EmbeddedPdfSignature, roots: list[Any], at: datetime | None) -> SignatureCheck:
    try:
        # A CA-issued certificate's path is validated at the time checked, not today: an archived
        # report stays valid after its certificate expires.
        moment = at or embedded.self_reported_timestamp
        context = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail", moment=moment)
        status = validate_pdf_signature(embedded, context)
    except Exception as exc:
        # Whatever a forged or damaged signature makes pyHanko raise is a failed check, not a crash.
        return SignatureCheck(ok=False, reason=f"{SIGNATURE_INVALID}: {type(exc).__name__}: {exc}")
    certificate = status.signing_cert
    signer = certificate.subject.human_friendly
    signed_at = status.signer_reported_dt
    stamp = status.timestamp_validity
    timestamped_at = stamp.timestamp if stamp is not None else None
    checked_at = at or timestamped_at or signed_at
    if not status.intact:
        reason = f"{MODIFIED_AFTER_SIGNING}: the signed bytes no longer match the digest in the signature"
    elif not status.valid:
        reason = f"{SIGNATURE_INVALID}: the cryptographic signature is not valid for the signed bytes"
    elif status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        level = status.modification_level.name.lower() if status.modification_level is not None else "unknown"
        coverage = status.coverage.name.lower() if status.coverage is not None else "unknown"
        reason = f"{MODIFIED_AFTER_SIGNING}: the signature covers {coverage}, and later changes are of kind {level}"
    elif not status.trusted:
        reason = f"{UNTRUSTED_SIGNER}: {signer}"
    elif stamp is not None and not (stamp.intact and stamp.valid):
        reason = f"{TIMESTAMP_INVALID}: the token does not match the signature or its own signature is not valid"
    elif stamp is not None and not stamp.trusted:
        reason = (
            f"{TIMESTAMP_INVALID}: the timestamp authority {stamp.signing_cert.subject.human_friendly} is not "
            "issued under a trusted certificate"
        )
    # RFC 5280 path validation never checks a trust anchor's own validity period, and a
    # self-signed service certificate is its own anchor: check it here.
    elif checked_at is None or not certificate.not_valid_before <= checked_at <= certificate.not_valid_after:
        reason = (
            f"{CERTIFICATE_NOT_VALID}: {signer} is valid from {certificate.not_valid_before.isoformat()} "
            f"to {certificate.not_valid_after.isoformat()}, checked at {checked_at.isoformat() if checked_at else '?'}"
        )
    elif not status.bottom_line:
        reason = f"{SIGNATURE_INVALID}: {status.summary()}"
    else:
        return SignatureCheck(ok=True, signer=signer, signed_at=signed_at, timestamped_at=timestamped_at)
    return SignatureCheck(ok=False, reason=reason, signer=signer, signed_at=signed_at, timestamped_at=timestamped_at)
