"""System check: the policy files are valid (the service refuses to start otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks


def policy_problem() -> str | None:
    from governance.evidence import known_checks
    from governance.policy import PolicyError, load_policy_set

    try:
        load_policy_set(Path(settings.POLICY_DIR), known_checks())
    except PolicyError as exc:
        return str(exc)
    return None


@checks.register("governance")
def check_policies(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problem = policy_problem()
    return [] if problem is None else [checks.Error(f"POLICY_DIR: {problem}", id="governance.E001")]


def require_valid_policies() -> None:
    problem = policy_problem()
    if problem is not None:
        raise SystemExit(f"configuration error: POLICY_DIR: {problem}")
