"""The audit side of the service, on two floors of its own and one shared with the ledger.

- ``audits.ledger`` (floor 1, its own Django app, label ``ledger``): the append-only RFC 9162
  Merkle log, signed checkpoints, proofs, signing keys and the personal-data vault. It imports no
  other app of ours.
- ``audits.verify`` (no floor): the offline bundle verifier, standard library and
  ``cryptography`` only, never Django.
- ``audits.checks`` (floor 3): garak security scans, fairlearn bias evaluations and waivers, as
  governed evidence.
- ``audits.reports`` (floor 4): GDPR, CCPA and EU AI Act reports as signed PDFs; read-only over
  every app, and imported by none.
"""
