"""Floor 3: governed deployments and the model server.

Belongs here: deployment requests and their signed grants, the model server process that verifies
a grant against the weights it loads, the runtime PII guard, inference logs, health, rollback and
retirement. It may use ``registry``, ``governance`` and the ledger; it never imports ``training``
internals or the reports, and loads no model at Django start-up.
"""
