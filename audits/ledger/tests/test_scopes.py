"""Attribution of entries to projects, as the ledger alone sees it (audits/ledger/scopes.py): the
project an app says a subject belongs to is recorded with the entry, in the same transaction, and
is append-only like the entry; anything nobody can place is the organisation's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, IntegrityError, connection, transaction

from audits.ledger import scopes
from audits.ledger.models import AppendOnlyError, Entry, EntryScope
from audits.ledger.selectors import entries_readable, entries_readable_count, entry_readable, tree_size
from audits.ledger.services import Actor, AppendRequest, Subject, ledger_append, ledger_append_many

pytestmark = pytest.mark.django_db


@pytest.fixture
def places(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Subjects of type ``place`` belong to the project whose key is their id's length; each
    question asked is kept, to count them."""
    asked: list[str] = []

    def project_of(subject_id: str) -> int | None:
        asked.append(subject_id)
        return len(subject_id)

    monkeypatch.setitem(scopes._BY_TYPE, "place", project_of)
    return asked


def test_each_entry_records_the_project_of_its_subject(actor: Any, places: list[str]) -> None:
    ledger_append(actor=actor, action="test.placed", subject=Subject("place", "abc"))
    ledger_append(actor=actor, action="test.unplaced", subject=Subject("thing", "abc"))
    ledger_append(actor=actor, action="test.subjectless")
    appended = ledger_append_many(
        [AppendRequest(actor=Actor.of(actor), action="test.batch", subject=Subject("place", "ab")) for _ in range(3)]
    )
    assert places == ["abc", "ab"]  # a batch asks once per subject
    found = dict(EntryScope.objects.values_list("entry_id", "project_id"))
    assert found == {0: 3, 1: None, 2: None, **{a.index: 2 for a in appended}}
    assert EntryScope.objects.count() == tree_size()


def test_attribution_is_append_only(actor: Any, places: list[str]) -> None:
    ledger_append(actor=actor, action="test.placed", subject=Subject("place", "abc"))
    scope = EntryScope.objects.get()
    with pytest.raises(AppendOnlyError):
        scope.save()
    with pytest.raises(AppendOnlyError):
        EntryScope.objects.update(project_id=99)
    for sql in ("UPDATE ledger_entryscope SET project_id = 99", "DELETE FROM ledger_entryscope"):
        with (
            pytest.raises((IntegrityError, DatabaseError), match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert EntryScope.objects.get().project_id == 3


def test_a_reader_reads_the_entries_of_their_projects_and_a_reader_of_all_reads_every_one(
    actor: Any, places: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    User = get_user_model()
    for subject_id in ("a", "bb", "bb", "ccc"):
        ledger_append(actor=actor, action="test.placed", subject=Subject("place", subject_id))
    ledger_append(actor=actor, action="test.organisation")
    reader, everything = User.objects.create_user(username="reader"), User.objects.create_user(username="all")
    monkeypatch.setattr(scopes, "_readable", [lambda user: {2, 3} if user.pk == reader.pk else set()])
    assert [e.index for e in entries_readable(reader)] == [1, 2, 3]
    assert entries_readable_count(reader) == 3
    assert entry_readable(reader, 0) is None and entry_readable(reader, 4) is None
    assert list(entries_readable(everything)) == []
    everything.groups.add(Group.objects.get(name="organisation_auditor"))
    everything = User.objects.get(pk=everything.pk)  # a fresh permission cache
    assert scopes.reads_every_entry(everything)
    assert [e.index for e in entries_readable(everything)] == [0, 1, 2, 3, 4] and entries_readable_count(
        everything
    ) == 5
    everything.is_active = False
    assert list(entries_readable(everything)) == []


def test_junk_ids_name_no_row(actor: Any) -> None:
    project_of = scopes.project_by_field(Entry, "index")
    ledger_append(actor=actor, action="test.event")
    assert project_of("0") == 0
    for junk in ("²", "-1", "1.0", str(2**63), "", "x"):
        assert project_of(junk) is None


@pytest.fixture
def actor_with_perm(actor: Any) -> Callable[[str], Any]:
    def make(codename: str) -> Any:
        from django.contrib.auth.models import Permission

        actor.user_permissions.add(Permission.objects.get(content_type__app_label="ledger", codename=codename))
        return get_user_model().objects.get(pk=actor.pk)

    return make


def test_the_read_all_permission_exists_and_its_group_holds_the_ledger_pages(actor_with_perm: Callable) -> None:
    assert scopes.reads_every_entry(actor_with_perm("read_all_entries"))
    held = set(Group.objects.get(name="organisation_auditor").permissions.values_list("codename", flat=True))
    assert held == {"read_all_entries", "view_entry", "view_checkpoint", "view_publishedkey", "view_verificationrun"}
