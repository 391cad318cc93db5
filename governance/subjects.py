"""The governed-subject interface. Apps on higher floors register their subject types here (in
their ``AppConfig.ready``), so governance never imports them.

A subject type says how to find an object by id, which project owns it, its digest (SHA-256 over
its governed fields: an approval is given to a digest, and stops counting when it changes), a short
description for approvers, the approval actions it admits (nothing else may be requested on it),
policy context it decides itself, what happens when a request about it is approved, who made it
(they never decide on it), and when a request about it may not be opened now.

Apps also register summaries (``register_summary``): the few facts a decider reads on the
decision page (a dataset version's personal data, a model's lineage, a deployment's audit
verdicts). Several apps may add facts to one subject type; the page shows them in the order the
apps registered them.
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
    # The approval actions the type admits (``dataset_version.use_for_training``): a request for
    # any other action on it is refused, naming the action, before any policy rule is looked up.
    actions: tuple[str, ...] = ()
    # Policy context the subject itself decides (say, its resource tier); it overrides the caller's.
    context: Callable[[Any], dict[str, str]] | None = None
    # Called in the transaction that approves a request about the subject: (object, action, actor).
    on_approved: Callable[[Any, str, Any], None] | None = None
    # Called in the transaction that closes a request about the subject without approving it
    # (rejected, withdrawn or expired): (object, action, the request's new state, actor).
    on_closed: Callable[[Any, str, str, Any], None] | None = None
    # The user ids of who made the subject (its uploader, its requester): under separation of
    # duties they never decide on a request about it, whoever submitted the request.
    authors: Callable[[Any], Iterable[int]] | None = None
    # The same for many subjects at once (subject id -> author ids), for lists that ask it of every
    # pending request (who may decide what): one query instead of one ``get`` per request.
    authors_by_id: Callable[[list[str]], dict[str, list[int]]] | None = None
    # Why a request for an action on this object may not be opened or approved now, in words (a
    # waiver of a run that never reached a verdict); None when it may. Called with (object, action).
    not_now: Callable[[Any, str], str | None] | None = None

    def admits(self, action: str) -> None:
        """Refuse (400, naming the action) an action this subject type does not admit."""
        if action not in self.actions:
            admitted = ", ".join(self.actions) or "none"
            raise DomainError(
                "invalid_input",
                f"action {action!r} does not apply to a {self.name}; it admits: {admitted}",
                fields={"action": [f"{action!r} is not an action on a {self.name} (admitted: {admitted})"]},
            )


@dataclass(frozen=True)
class Fact:
    """One line of a subject's summary: what it is about (``label``), what is true (``value``),
    the object it names (``link``: the page links its admin page when the viewer may open it),
    and a ``tone`` for a verdict a decider should notice (``ok``, ``warning`` or ``bad``; empty
    for a plain fact)."""

    label: str
    value: str
    link: Any = None
    tone: str = ""


Summary = Callable[[Any], Iterable[Fact]]

_TYPES: dict[str, SubjectType] = {}
_SUMMARIES: dict[str, list[Summary]] = {}


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


def request_in_words(action: str, subject_type: str, subject_id: str) -> str:
    """What a request asks, as a person reads it: the action's verb and the subject by its own name
    ("use for training: assistant/tickets v1"); a subject that no longer exists by its type and id."""
    verb = action.partition(".")[2].replace("_", " ") or action
    kind = _TYPES.get(subject_type)
    obj = kind.get(subject_id) if kind is not None else None
    if obj is None:
        return f"{verb}: {subject_type.replace('_', ' ')} {subject_id} (no longer exists)"
    return f"{verb}: {obj}"


def subject_actions() -> dict[str, str]:
    """Every admitted approval action and the subject type that admits it."""
    return {action: kind.name for kind in _TYPES.values() for action in kind.actions}


def register_summary(name: str, summary: Summary) -> None:
    """Add ``summary`` (subject object -> facts) to the decision page of subject type ``name``."""
    _SUMMARIES.setdefault(name, []).append(summary)


def subject_summary(name: str, obj: Any) -> list[Fact]:
    """The facts every app registered for subject type ``name``, about ``obj``, in their order."""
    return [fact for summary in _SUMMARIES.get(name, []) for fact in summary(obj)]


def subject_ids(ids: Iterable[str]) -> list[int]:
    """The ids that can name a row (ASCII digits within the database's integers), as integers."""
    return [int(pk) for pk in map(str, ids) if pk.isascii() and pk.isdigit() and int(pk) < 2**63]


def authors_by_field(model: Any, field: str) -> Callable[[list[str]], dict[str, list[int]]]:
    """An ``authors_by_id`` for subjects whose author is the foreign key ``field`` of their row."""

    def authors(ids: list[str]) -> dict[str, list[int]]:
        found = model.objects.filter(pk__in=subject_ids(ids)).values_list("pk", f"{field}_id")
        return {str(pk): [author] for pk, author in found}

    return authors


def authors_of(name: str, ids: Iterable[str]) -> dict[str, list[int]]:
    """Who made each subject of type ``name`` (subject id -> user ids); a missing one is absent."""
    kind = subject_type(name)
    wanted = sorted(set(map(str, ids)))
    if kind.authors is None or not wanted:
        return {}
    if kind.authors_by_id is not None:
        return kind.authors_by_id(wanted)
    found = {}
    for pk in wanted:
        obj = kind.get(pk)
        if obj is not None:
            found[pk] = list(kind.authors(obj))
    return found
