"""Whose entries are whose: each entry is attributed, when it is appended, to the project it is
about (or to the organisation), and a reader reads the entries of the projects where they hold a
reading role; the holder of ``ledger.read_all_entries`` (the organisation-wide auditors' group,
superusers) reads every entry.

The ledger sits below governance and knows a project only as its primary key. The apps that own
the subject types say which project a subject belongs to, at start-up (``AppConfig.ready``), as
they register their governed subject types with governance:

- ``register_subject_project(type, project_of)``: the project of a subject of that type, by id;
- ``register_subject_project_fallback(project_of)``: one answer for the types nobody registered
  (governance answers for every governed subject type it knows);
- ``register_readable_projects(projects_of)``: the projects whose entries a user may read
  (governance answers from the roles it grants).

A subject nobody can place (no subject, a type nobody registered, an id that names no row) is the
organisation's: only readers of every entry see it. That is the safe side: an entry is never shown
to a project's readers by mistake.

Attribution is kept beside the entry (``EntryScope``, one row per entry), not in the entry's bytes:
the bytes, the tree, the export and the offline verifier are the same as before attribution existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

READ_ALL_PERMISSION = "ledger.read_all_entries"

ProjectOf = Callable[[str], int | None]

_BY_TYPE: dict[str, ProjectOf] = {}
_fallback: list[Callable[[str, str], int | None]] = []
_readable: list[Callable[[Any], Iterable[int]]] = []


def register_subject_project(subject_type: str, project_of: ProjectOf) -> None:
    """``project_of(subject id)`` is the primary key of the subject's project, or ``None`` for a
    subject of the organisation (or no such subject)."""
    _BY_TYPE[subject_type] = project_of


def register_subject_project_fallback(project_of: Callable[[str, str], int | None]) -> None:
    """``project_of(subject type, subject id)`` answers for the types nobody registered."""
    _fallback[:] = [project_of]


def register_readable_projects(projects_of: Callable[[Any], Iterable[int]]) -> None:
    """``projects_of(user)``: the primary keys of the projects whose entries ``user`` may read."""
    _readable[:] = [projects_of]


def project_by_field(model: Any, path: str, key: str = "pk") -> ProjectOf:
    """A ``project_of`` for subjects whose id is their row's ``key`` (the primary key, or another
    unique field such as a report's UUID) and whose project is the field ``path`` of that row
    (``"project_id"``, ``"dataset__project_id"``): one indexed query. An id the field cannot hold
    names no row."""
    from django.core.exceptions import ValidationError

    def project_of(subject_id: str) -> int | None:
        text = str(subject_id)
        # A primary key: ASCII digits within the database's integers only.
        if key == "pk" and (not (text.isascii() and text.isdigit()) or int(text) >= 2**63):
            return None
        try:
            return model._default_manager.filter(**{key: text}).values_list(path, flat=True).first()
        except (ValidationError, ValueError):
            return None

    return project_of


def subject_project(subject_type: str, subject_id: str) -> int | None:
    """The primary key of the project a subject belongs to; ``None``: the organisation's."""
    project_of = _BY_TYPE.get(subject_type)
    if project_of is not None:
        return project_of(subject_id)
    if _fallback:
        return _fallback[0](subject_type, subject_id)
    return None


def reads_every_entry(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.has_perm(READ_ALL_PERMISSION))


def readable_projects(user: Any) -> frozenset[int] | None:
    """The projects whose entries ``user`` reads, or ``None`` when they read every entry (the
    organisation's included). Nobody registered (the ledger alone): no project."""
    if reads_every_entry(user):
        return None
    if user is None or not user.is_authenticated or not user.is_active or not _readable:
        return frozenset()
    return frozenset(_readable[0](user))
