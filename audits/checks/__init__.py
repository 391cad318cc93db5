"""Floor 3: model audits as governed evidence.

Security scans with garak and bias evaluations with fairlearn against model versions, their
reports content-addressed and ledgered, reviewers' verdicts and waivers, and the evidence checks
that deployment policies require. Uses the ledger, governance and the registry; imported by none of
them. garak, fairlearn, torch and transformers are imported only inside worker code paths.
"""
