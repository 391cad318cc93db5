"""Fixtures of the apps' own tests that the cross-app scenarios here reuse (these scenarios span
floors, so they live here rather than in the lower floor's tests/)."""

from audits.ledger.tests.conftest import actor, append  # noqa: F401
from training.tests.conftest import ready  # noqa: F401
