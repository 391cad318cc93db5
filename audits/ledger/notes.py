"""C2SP tlog-checkpoint bodies inside C2SP signed notes, as the service signs and reads them.

The code is the offline verifier's (``verifier/``, module ``llmops_ledger_verify.notes``), so a
checkpoint the service signs is parsed and checked by one copy of the format.
"""

from llmops_ledger_verify.notes import (
    SIGNATURE_PREFIX,
    Checkpoint,
    NoteError,
    Signature,
    Signer,
    parse,
    parse_signature_lines,
    sign,
    verify,
)

__all__ = [
    "SIGNATURE_PREFIX",
    "Checkpoint",
    "NoteError",
    "Signature",
    "Signer",
    "parse",
    "parse_signature_lines",
    "sign",
    "verify",
]
