"""Loaded by pytest (``-p tests.pytest_environment``) before Django starts.

Points the service's ``var/`` at a fresh temporary folder, so the suite never reads or writes a
developer's database, broker, keys or artifacts, and every subprocess a test starts (a Celery
worker, ``make up``) inherits the same isolated environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_VAR_DIR = tempfile.mkdtemp(prefix="gov-test-var-")
os.environ["GOV_VAR_DIR"] = _VAR_DIR
for _name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "LEDGER_SIGNING_KEY_FILE", "ARTIFACT_ROOT"):
    os.environ.pop(_name, None)
os.environ.setdefault("LOG_FORMAT", "json")


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_VAR_DIR, ignore_errors=True)
