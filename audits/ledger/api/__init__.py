"""The ledger's read API: checkpoint, keys and proofs are public; each reader reads the entries of
the projects where they hold a reading role, the organisation-wide auditors every entry."""
