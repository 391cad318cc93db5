"""Named evidence checks that policies require. Higher apps register them (``AppConfig.ready``):
a check takes the subject object (and the parameters the policy gives it) and answers
``(holds, detail)``.

In a policy a check is named alone (``personal_data_reviewed``) or with its parameters
(``{check: security_scan_passed, profile: baseline, max_age_days: 30}``); a check declares the
parameters it takes, each required, with its type, and a policy file naming others, or missing
one, is refused at load with the file, line and field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[..., tuple[bool, str]]
# name -> subject type -> (check, parameters): one check may be asked of several subject types
# (a deployment answers "security scan passed" through its model version).
_CHECKS: dict[str, dict[str, tuple[Check, dict[str, type]]]] = {}


def register_check(name: str, subject_type: str, check: Check, params: dict[str, type] | None = None) -> None:
    kinds = _CHECKS.setdefault(name, {})
    for _, other in kinds.values():
        if other != dict(params or {}):
            raise ValueError(f"evidence check {name!r} is registered with other parameters already")
    kinds[subject_type] = (check, dict(params or {}))


def known_checks() -> set[str]:
    return set(_CHECKS)


def check_params(name: str) -> dict[str, type]:
    """The parameters check ``name`` takes (name -> type)."""
    return next(iter(_CHECKS[name].values()))[1]


def item_name(item: str | dict[str, Any]) -> str:
    """How an evidence item reads: ``name`` or ``name(param=value, ...)``."""
    if isinstance(item, str):
        return item
    params = ", ".join(f"{k}={v}" for k, v in sorted(item.items()) if k != "check")
    return f"{item['check']}({params})"


def evaluate(items: tuple[str | dict[str, Any], ...], subject_type: str, subject: Any) -> list[dict[str, Any]]:
    """Each required check's outcome; a check made for another subject type does not hold."""
    outcomes = []
    for item in items:
        name = item if isinstance(item, str) else item["check"]
        params = {} if isinstance(item, str) else {k: v for k, v in item.items() if k != "check"}
        kinds = _CHECKS[name]
        if subject_type not in kinds:
            detail = f"applies to {', '.join(sorted(kinds))}, not {subject_type}"
            outcomes.append({"check": item_name(item), "holds": False, "detail": detail})
            continue
        holds, detail = kinds[subject_type][0](subject, **params)
        outcomes.append({"check": item_name(item), "holds": holds, "detail": detail})
    return outcomes
