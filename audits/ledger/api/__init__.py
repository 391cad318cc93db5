"""The ledger's read API: checkpoint, keys and proofs are public; entries need ``ledger.view_entry``."""
