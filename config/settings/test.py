"""Test settings: the embedded default with fast password hashing.

The test suite points ``GOV_VAR_DIR`` at a temporary folder before Django starts (tests/conftest.py
and the pytest configuration), so tests never touch a developer's ``var/``.
"""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
