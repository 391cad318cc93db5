"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification, as the service uses them.

The code is the offline verifier's (``verifier/``, module ``llmops_ledger_verify.merkle``), so the
service and an auditor's standalone verifier hash with one copy of it.
"""

from llmops_ledger_verify.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeKey,
    ProofError,
    consistency_ranges,
    cover,
    fold,
    inclusion_ranges,
    largest_power_of_two_below,
    leaf_hash,
    node_hash,
    nodes_for,
    root_from_inclusion_proof,
    slow_mth,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeKey",
    "ProofError",
    "consistency_ranges",
    "cover",
    "fold",
    "inclusion_ranges",
    "largest_power_of_two_below",
    "leaf_hash",
    "node_hash",
    "nodes_for",
    "root_from_inclusion_proof",
    "slow_mth",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]
