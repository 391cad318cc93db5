"""Floor 2: who may do what, and the approval workflows that decide it.

Belongs here: projects (the scope of every permission), the role groups and per-project role
grants (django-guardian object permissions), service accounts and hashed API tokens, the policy
engine that loads ``policies/``, approval requests and decisions, and the approval API. It may use
the ledger (``audits.ledger``) and ``common``; it never imports the governed subjects' apps
(``registry``, ``training``, ``serving``) nor the reports: they plug into it through the
governed-subject interface instead.
"""
