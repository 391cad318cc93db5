"""Models of the ledger: entries, stored subtree hashes, checkpoints and the vault."""
