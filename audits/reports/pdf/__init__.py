"""Compliance reports as PDFs: a small document model, a reportlab renderer, PAdES signing and
verification with pyHanko. No Django here: callers gather the data, this module lays it out.

A report is built from one signed ledger checkpoint. The cover page shows the checkpoint's origin,
tree size and root hash and carries the full signed note; every table row may cite a ledger index,
shown in a "ledger #" column. The machine-readable side travels as an embedded file,
``report.json`` (``/Names /EmbeddedFiles`` in the catalog): format, kind, id, title, scope, period,
generation time, the checkpoint text, the sorted list of cited ledger indexes, the claims (each
fact with the entry and field that say it) and the draft notice. Further attachments (a letter's
JSON annex) lie beside it, and the SCITT receipts (RFC 9942 COSE receipts) of cited entries,
``ledger-receipt-<index>.cose``: at most ``RECEIPTS_LIMIT`` (100, about 1 KB each), those the
claims rest on first, then the lowest cited indexes (``receipt_indexes``); ``report.json`` lists
them under ``ledger_receipts`` with how many cited entries have none (``read_receipts``). They
lie in the revision that the signature covers, so ``read_pdf`` reads back what was signed,
provided ``verify_pdf_signature`` says the file was not changed after.

Caveats:

- Text is set in TrueType fonts embedded as subsets, from system packages: DejaVu Sans, Bold and
  Mono (fonts-dejavu-core) and Droid Sans Fallback (fonts-droid-fallback) per character for Han,
  kana and Hangul (see ``styles``). Right-to-left scripts are neither reordered nor shaped:
  reportlab needs rlbidi and uharfbuzz for that, and the lock has neither.
- ``build_pdf`` is byte-for-byte deterministic. ``sign_pdf`` is not: pyHanko gives the incremental
  update a random second trailer ID and stamps ``/ModDate`` with the wall clock. The signing time
  inside the signature is ``signed_at``.
- The signature is PAdES baseline B-B with an ECDSA or RSA key (readers do not validate Ed25519),
  B-T when a timestamp authority signs it too; no revocation data. The certificate's validity is
  checked at the timestamp's time, else at the signer's claimed time, unless a time is given.
- ``validate_pdf_signature`` runs its own event loop: call ``verify_pdf_signature`` from
  synchronous code (a worker, a management command, ``sync_to_async`` in an async view).

The parts: ``document`` (the model a builder fills), ``render`` (``build_pdf``, with ``styles``,
``tables`` and ``charts``), ``signing`` (``sign_pdf``) and ``verification`` (``read_pdf``,
``verify_pdf_signature``).
"""

from audits.reports.pdf.document import (
    METADATA_FILENAME,
    METADATA_FORMAT,
    PRODUCER,
    RECEIPTS_LIMIT,
    VERIFY_COMMAND,
    Attachment,
    BarChart,
    Claim,
    Digest,
    Heading,
    KeyValues,
    LineChart,
    Paragraph,
    Report,
    ReportInfo,
    ReportPdfError,
    Section,
    Table,
    cited_indexes,
    receipt_filename,
    receipt_indexes,
    report_metadata,
)
from audits.reports.pdf.render import build_pdf
from audits.reports.pdf.signing import SIGNATURE_FIELD, service_certificate, sign_pdf
from audits.reports.pdf.verification import (
    CERTIFICATE_NOT_VALID,
    MODIFIED_AFTER_SIGNING,
    NO_SIGNATURE,
    SIGNATURE_INVALID,
    TIMESTAMP_INVALID,
    UNREADABLE,
    UNTRUSTED_SIGNER,
    SignatureCheck,
    read_attachment,
    read_pdf,
    read_receipts,
    verify_pdf_signature,
)

__all__ = [
    "CERTIFICATE_NOT_VALID",
    "METADATA_FILENAME",
    "METADATA_FORMAT",
    "MODIFIED_AFTER_SIGNING",
    "NO_SIGNATURE",
    "PRODUCER",
    "RECEIPTS_LIMIT",
    "SIGNATURE_FIELD",
    "SIGNATURE_INVALID",
    "TIMESTAMP_INVALID",
    "UNREADABLE",
    "UNTRUSTED_SIGNER",
    "VERIFY_COMMAND",
    "Attachment",
    "BarChart",
    "Claim",
    "Digest",
    "Heading",
    "KeyValues",
    "LineChart",
    "Paragraph",
    "Report",
    "ReportInfo",
    "ReportPdfError",
    "Section",
    "SignatureCheck",
    "Table",
    "build_pdf",
    "cited_indexes",
    "read_attachment",
    "read_pdf",
    "read_receipts",
    "receipt_filename",
    "receipt_indexes",
    "report_metadata",
    "service_certificate",
    "sign_pdf",
    "verify_pdf_signature",
]
