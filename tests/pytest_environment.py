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
# Paths a developer may have set for their own service stay out of the suite. DATABASE_URL and
# CELERY_BROKER_URL are kept: they select the scale mode (pytest-django makes its own test
# database on the server, never touching the named one).
for _name in ("LEDGER_SIGNING_KEY_FILE", "LEDGER_CHECKPOINT_LOG", "ARTIFACT_ROOT", "MLFLOW_TRACKING_URI"):
    os.environ.pop(_name, None)
os.environ.setdefault("LOG_FORMAT", "json")


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_VAR_DIR, ignore_errors=True)
