"""Test settings: the embedded default with fast password hashing.

The test suite points ``GOV_VAR_DIR`` at a temporary folder before Django starts (tests/conftest.py
and the pytest configuration), so tests never touch a developer's ``var/``.
"""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The suite makes many API calls as the same few users (the permission matrix, the bench-like
# tests) and sends wrong tokens on purpose: limits that never bite. The tests of the limits turn
# them down with override_settings (tests/test_approval_request_limits.py).
API_RATE_LIMITS = {group: "1000000/m" for group in API_RATE_LIMITS}  # noqa: F405
API_TOKEN_LOCKOUT_FAILURES = 1000000

# The suite's tests read the tree right after a governed change, in transactions that roll back:
# the ledger integrates inline. The sequencing tests (audits/ledger/tests/test_sequencing.py) run
# the deferred sequencer and its integrator against PostgreSQL, with real concurrent writers.
LEDGER_SEQUENCING = "inline"
