"""Floor 1: the append-only, signed, tamper-evident ledger.

Belongs here: ledger entries with contiguous indexes and their canonical (RFC 8785) bytes, the
stored subtree hashes of the RFC 9162 Merkle tree, inclusion and consistency proofs, C2SP signed
checkpoints and their signing keys, and the vault that seals personal data under per-data-subject
keys (erased by destroying the key). It imports no other app of ours, only ``common``; every app
above writes to it through ``audits.ledger.services``.
"""
