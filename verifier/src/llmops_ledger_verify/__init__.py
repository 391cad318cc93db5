"""Verify an exported llmops-governance ledger bundle offline, with Python and ``cryptography`` alone.

Run ``ledger-verify DIR`` or ``python -m llmops_ledger_verify DIR``; from code,
``verify_bundle(Path(DIR), pinned_keys, origin)`` returns a summary or raises ``VerificationFailed``
naming the first fault. The modules: ``merkle`` (RFC 9162 hashing and proofs), ``notes`` (C2SP
signed checkpoints), ``keys`` (verifier keys), ``replay`` (re-hash a log against its checkpoints),
``bundle`` (read an exported bundle) and ``cli``. The governance service imports the same modules,
so the service and an auditor check a ledger with one copy of the code.
"""

__version__ = "0.1.0"
