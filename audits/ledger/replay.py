"""Replay a log against its signed checkpoints: ``manage.py ledger verify`` over the database.

The code is the offline verifier's (``verifier/``, module ``llmops_ledger_verify.replay``), so the
service and an auditor's standalone verifier over an exported bundle replay with one copy of it.
"""

from llmops_ledger_verify.replay import (
    ReplayResult,
    Segmented,
    SignedCheckpoint,
    VerificationFailed,
    body_index,
    check_notes,
    replay,
)

__all__ = ["ReplayResult", "Segmented", "SignedCheckpoint", "VerificationFailed", "body_index", "check_notes", "replay"]
