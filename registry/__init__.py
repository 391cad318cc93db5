"""Floor 3: the inventory of governed assets, versioned by content.

Belongs here: projects' datasets and their immutable, content-addressed versions with the facts a
GDPR Art. 30 record needs, the Presidio PII scans of every version and their review, the
data-subject index, models and model versions, prompt templates, and the lineage that links them.
Every write goes through ``registry.services`` and appends ledger entries in the same transaction.
It may use ``governance`` and the ledger; it never imports ``training``, ``serving`` or the reports.
"""
