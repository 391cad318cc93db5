"""The governed-subject interface. Apps on higher floors register their subject types here (in
their ``AppConfig.ready``), so governance never imports them.

A subject type says how to find an object by id, which project owns it, its digest (SHA-256 over
its governed fields: an approval is given to a digest, and stops counting when it changes), a short
description for approvers, policy context it decides itself, what happens when a request
about it is approved, and who made it (they never decide on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from common.errors import DomainError


@dataclass(frozen=True)
class SubjectType:
    name: str
    get: Callable[[str], Any | None]
    project: Callable[[Any], Any]
    digest: Callable[[Any], str]
    describe: Callable[[Any], dict[str, Any]]
    # Policy context the subject itself decides (say, its resource tier); it overrides the caller's.
    context: Callable[[Any], dict[str, str]] | None = None
    # Called in the transaction that approves a request about the subject: (object, action, actor).
    on_approved: Callable[[Any, str, Any], None] | None = None
    # The user ids of who made the subject (its uploader, its requester): under separation of
    # duties they never decide on a request about it, whoever submitted the request.
    authors: Callable[[Any], Iterable[int]] | None = None


_TYPES: dict[str, SubjectType] = {}


def register_subject_type(subject_type: SubjectType) -> None:
    _TYPES[subject_type.name] = subject_type


def subject_type(name: str) -> SubjectType:
    try:
        return _TYPES[name]
    except KeyError:
        known = ", ".join(sorted(_TYPES)) or "none"
        raise DomainError("unknown_subject_type", f"no governed subject type {name!r}; known: {known}") from None


def subject_types() -> list[str]:
    return sorted(_TYPES)
