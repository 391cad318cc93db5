"""The erasure journal (issue 26, class 15): every erasure is written outside the database, and a
database that comes back from a backup taken before it is erased again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audits.ledger.backup import BackupError
from audits.ledger.backup.journal import (
    REAPPLIED_REASON,
    erased_keys_present,
    journal_complete,
    journal_read,
    journal_reapply,
)
from audits.ledger.models import DataSubjectKey, Entry
from audits.ledger.selectors import entry_decoded
from audits.ledger.services import ERASED, LedgerError, data_subject_erase, ledger_append, vault_open, vault_seal

pytestmark = pytest.mark.django_db
SUBJECT = "subject-journal-1"


@pytest.fixture
def journal(settings: object, tmp_path: Path) -> Path:
    path = tmp_path / "offsite" / "ledger-erasures.jsonl"
    settings.LEDGER_ERASURE_JOURNAL = path  # type: ignore[attr-defined]
    return path


def _bring_the_key_back(key: bytes) -> None:
    """What restoring a backup taken before the erasure does to the vault row."""
    DataSubjectKey.objects.filter(ref=SUBJECT).update(key=key, erased_at=None)


def test_an_erasure_is_journaled_outside_the_database(journal: Path, actor: object) -> None:
    vault_seal(subject_ref=SUBJECT, value={"email": "grace@example.org"})
    erasure = data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(r["subject"], r["entry"]) for r in records] == [(SUBJECT, erasure.index)]
    assert journal.stat().st_mode & 0o777 == 0o640


def test_a_restored_key_is_erased_again_and_the_reapplication_is_ledgered(journal: Path, actor: object) -> None:
    sealed = vault_seal(subject_ref=SUBJECT, value={"email": "grace@example.org"})
    ledger_append(actor=actor, action="dataset_version.pii_found", payload={"who": sealed})
    key = bytes(DataSubjectKey.objects.get(ref=SUBJECT).key)
    erasure = data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
    _bring_the_key_back(key)
    assert vault_open(sealed) == {"email": "grace@example.org"}
    assert erased_keys_present() == [SUBJECT]  # the database against its own ledger

    messages: list[str] = []
    assert journal_reapply(say=messages.append) == [SUBJECT]
    row = DataSubjectKey.objects.get(ref=SUBJECT)
    assert row.key is None and row.erased_at is not None
    assert vault_open(sealed) == ERASED
    again = Entry.objects.filter(action="ledger.data_subject.erased", subject_id=SUBJECT).order_by("-index").first()
    assert again is not None and again.index > erasure.index
    payload = entry_decoded(again)["entry"]["payload"]
    assert payload["reason"] == REAPPLIED_REASON and payload["journal_entry"] == erasure.index
    assert "1 key(s) the backup brought back erased again" in messages[0]
    assert erased_keys_present() == []
    assert journal_reapply(say=messages.append) == []  # nothing left to erase: nothing appended
    assert Entry.objects.filter(action="ledger.data_subject.erased", subject_id=SUBJECT).count() == 2


def test_the_journal_is_completed_from_the_database_and_a_bad_line_is_named(journal: Path, actor: object) -> None:
    vault_seal(subject_ref=SUBJECT, value="x")
    data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
    journal.unlink()  # the journal lost: the next backup writes what the database knows
    assert journal_complete() == 1
    assert [line.subject for line in journal_read()] == [SUBJECT]
    assert journal_complete() == 0
    with journal.open("a") as handle:
        handle.write('{"subject": 5}\n')
    with pytest.raises(BackupError, match=r"ledger-erasures.jsonl, line 2: not an erasure record"):
        journal_read()


def test_an_erasure_that_cannot_be_journaled_is_refused_and_changes_nothing(journal: Path, actor: object) -> None:
    vault_seal(subject_ref=SUBJECT, value="x")
    journal.mkdir(parents=True)  # not a file that can be appended to (a bad mount, say)
    entries = Entry.objects.count()
    with pytest.raises(LedgerError, match="cannot be written") as refused:
        data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
    assert refused.value.code == "erasure_journal_unavailable" and refused.value.status_code == 503
    assert DataSubjectKey.objects.get(ref=SUBJECT).key is not None and Entry.objects.count() == entries
