"""System check: the signing key file exists, is private and parses (run by manage.py commands)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from audits.ledger.keys import KeyFileError, load_signer_keys


def signing_key_problem() -> str | None:
    try:
        load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)
    except KeyFileError as exc:
        return str(exc)
    return None


@checks.register("ledger")
def check_signing_key(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problem = signing_key_problem()
    if problem is None:
        return []
    return [checks.Error(f"LEDGER_SIGNING_KEY_FILE: {problem}", id="ledger.E001")]


def require_signing_key() -> None:
    """For long-running processes (web, worker): stop at start-up with one line if the signing key
    or the vault's key-encryption key is bad."""
    problem = signing_key_problem()
    if problem is not None:
        raise SystemExit(f"configuration error: LEDGER_SIGNING_KEY_FILE: {problem}")
    from audits.ledger.kek import kek_startup_problem

    if (problem := kek_startup_problem()) is not None:
        raise SystemExit(f"configuration error: the vault's key-encryption key: {problem}")
