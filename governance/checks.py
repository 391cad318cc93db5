"""System check: the policy files are valid (the service refuses to start otherwise)."""

from __future__ import annotations

from typing import Any

from django.core import checks


def policy_problem() -> str | None:
    from governance.policy import PolicyError, current_policy_set

    # Through the cache that decisions read: a worker that validated its policy files at boot
    # does not parse them again on its first decision (measured: 70 ms for the shipped seven).
    try:
        current_policy_set()
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
