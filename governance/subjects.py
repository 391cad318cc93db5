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

from collections.abc import Callable, Iterable, Sequence
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
    # Each subject's own name (subject id -> ``str`` of the object), for lists that name the
    # subjects of many requests: one query instead of one ``get`` per request.
    names_by_id: Callable[[list[str]], dict[str, str]] | None = None

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
    return requests_in_words([(action, subject_type, subject_id)])[0]


def requests_in_words(requests: Sequence[tuple[str, str, str]]) -> list[str]:
    """``request_in_words`` of each ``(action, subject type, subject id)``, the subjects of a type
    named in one query where the type can (``names_by_id``)."""
    wanted: dict[str, set[str]] = {}
    for _, kind, pk in requests:
        wanted.setdefault(kind, set()).add(pk)
    names: dict[tuple[str, str], str] = {}
    for kind, ids in wanted.items():
        found = _TYPES.get(kind)
        if found is None:
            continue
        if found.names_by_id is not None:
            names.update(((kind, pk), name) for pk, name in found.names_by_id(sorted(ids)).items())
            continue
        for pk in ids:
            obj = found.get(pk)
            if obj is not None:
                names[kind, pk] = str(obj)
    out = []
    for action, kind, pk in requests:
        verb = action.partition(".")[2].replace("_", " ") or action
        name = names.get((kind, pk))
        out.append(
            f"{verb}: {name}" if name is not None else f"{verb}: {kind.replace('_', ' ')} {pk} (no longer exists)"
        )
    return out


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


def names_by_pk(model: Any, *related: str) -> Callable[[list[str]], dict[str, str]]:
    """A ``names_by_id``: each row's ``str``, its ``related`` rows read in the same query."""

    def names(ids: list[str]) -> dict[str, str]:
        rows = model.objects.select_related(*related).filter(pk__in=subject_ids(ids))
        return {str(row.pk): str(row) for row in rows}

    return names


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
