"""Named evidence checks that policies require. Higher apps register them (``AppConfig.ready``):
a check takes the subject object and answers ``(holds, detail)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], tuple[bool, str]]
_CHECKS: dict[str, tuple[str, Check]] = {}


def register_check(name: str, subject_type: str, check: Check) -> None:
    _CHECKS[name] = (subject_type, check)


def known_checks() -> set[str]:
    return set(_CHECKS)


def evaluate(names: tuple[str, ...], subject_type: str, subject: Any) -> list[dict[str, Any]]:
    """Each required check's outcome; a check made for another subject type does not hold."""
    outcomes = []
    for name in names:
        kind, check = _CHECKS[name]
        if kind != subject_type:
            outcomes.append({"check": name, "holds": False, "detail": f"applies to {kind}, not {subject_type}"})
            continue
        holds, detail = check(subject)
        outcomes.append({"check": name, "holds": holds, "detail": detail})
    return outcomes
