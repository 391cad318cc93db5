"""System check: the scan and evaluation profiles are valid (the service refuses to start otherwise)."""

from __future__ import annotations

from typing import Any

from django.core import checks


def profile_problem() -> str | None:
    from audits.checks.profiles import ProfileError, profiles

    try:
        profiles("security")
        profiles("bias")
    except ProfileError as exc:
        return str(exc)
    return None


@checks.register("checks")
def check_profiles(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problem = profile_problem()
    return [] if problem is None else [checks.Error(f"POLICY_DIR: {problem}", id="checks.E001")]


def require_valid_profiles() -> None:
    problem = profile_problem()
    if problem is not None:
        raise SystemExit(f"configuration error: POLICY_DIR: {problem}")
