"""The erasure journal: every crypto-shredding of a data subject's vault key, appended to a file
kept outside the database and outside its backups (``LEDGER_ERASURE_JOURNAL``, by default beside
the checkpoint log, and like it best kept on other storage).

A backup taken before an erasure still holds the subject's key. Every restore therefore reads the
journal and erases again, in the restored database before it lands (SQLite) or right after it is
loaded (PostgreSQL), every subject the journal names whose key the backup brought back: each is a
``ledger.data_subject.erased`` entry saying it was re-applied. The service is not started before
that has happened, because ``manage.py restore`` does it.

When a line is written. ``data_subject_erase`` appends the line inside its transaction, after the
key is destroyed and before the commit, and fsyncs it (as a checkpoint's line is written before its
row). A line whose transaction then rolled back names a subject whose erasure was ordered and did
not complete; re-applying it destroys a key that was meant to be destroyed (the erasure, retried,
skips a key already gone). The other order could lose an erasure in a crash.
Backups complete the journal (``journal_complete``): a key erased in the database and missing from
the journal (a journal file lost or replaced) is added before the backup is taken.

A line is ``{"subject": REF, "erased_at": ISO-8601, "entry": LEDGER INDEX or null}``; the subject
reference is the vault's opaque one, never personal data. The erasure of a person's records
(``audits.privacy``'s ``dsr_erase``) also journals each artifact blob it deletes, as
``{"blob": SHA-256, "erased_at": ..., "entry": null}``: a restore does not bring those bytes back
(the dataset version rows that name them remain, and the restore says so).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.backup.layout import BackupError, Say, _fsync_dir

REAPPLIED_REASON = "re-applied from the erasure journal after a restore"

# Apps above the ledger that keep clear text beside a vault reference, text whose erasure went with
# the reference's key (an incident's free text and its ``text_ref``), register here at start-up
# (``AppConfig.ready``). A restore calls each, in its transaction, with the references it is about
# to erase again, before their keys go; each returns what it did, in words, for the restore to say.
_before_reapply: list[Callable[[set[str]], list[str]]] = []


def register_before_reapply(hook: Callable[[set[str]], list[str]]) -> None:
    if hook not in _before_reapply:
        _before_reapply.append(hook)


@dataclass(frozen=True)
class JournalLine:
    subject: str | None
    blob: str | None
    erased_at: str
    entry: int | None


def journal_path() -> Path:
    return Path(settings.LEDGER_ERASURE_JOURNAL)


def journal_append(
    *, subject_ref: str | None = None, blob: str | None = None, erased_at: datetime, entry: int | None = None
) -> None:
    """Append one erasure (a subject's key or an artifact blob) to the journal and fsync it (the
    file and its folder are made if missing). A journal that cannot be written refuses the erasure
    (``LedgerError`` ``erasure_journal_unavailable``, 503): an erasure a restore could undo is not
    made."""
    from audits.ledger.services import LedgerError

    if (subject_ref is None) == (blob is None):
        raise ValueError("an erasure journal line names a subject or a blob")
    path = journal_path()
    named = {"subject": subject_ref} if subject_ref is not None else {"blob": blob}
    line = json.dumps({**named, "erased_at": erased_at.isoformat(), "entry": entry}) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the file's name too must survive a crash
            _fsync_dir(path.parent)
    except OSError as exc:
        raise LedgerError(
            "erasure_journal_unavailable",
            f"the erasure journal {path} (LEDGER_ERASURE_JOURNAL) cannot be written ({exc.strerror or exc}): "
            "nothing was erased",
            status_code=503,
        ) from None


def journal_read(path: Path | None = None) -> list[JournalLine]:
    """The journal's lines (none when the file does not exist); ``BackupError`` names a bad line."""
    path = path or journal_path()
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            subject, blob = record.get("subject"), record.get("blob")
            if (
                not isinstance(subject, str | None)
                or not isinstance(blob, str | None)
                or (subject is None) == (blob is None)
            ):
                raise ValueError(text)
            entry = record.get("entry")
            if entry is not None and not isinstance(entry, int):
                raise ValueError(text)
            line = JournalLine(subject=subject, blob=blob, erased_at=str(record["erased_at"]), entry=entry)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BackupError(f"the erasure journal {path}, line {number}: not an erasure record") from None
        lines.append(line)
    return lines


def _system_actor() -> Any:
    """The service's own account (governance's ``system`` user, made by its migrations); the name is
    repeated here because this floor may not import governance."""
    from django.contrib.auth import get_user_model

    from audits.ledger.services import Actor

    user = get_user_model().objects.filter(username="system").first()
    return user if user is not None else Actor(id="0", name="system")


def journal_reapply(*, say: Say) -> list[str]:
    """Erase again, in the database this connection points at, every subject of the journal whose
    key is present; each is ledgered as re-applied. Returns the subject references erased."""
    from audits.ledger.models import DataSubjectKey
    from audits.ledger.services import Subject, ledger_append

    lines = journal_read()
    first: dict[str, JournalLine] = {}
    for line in lines:
        if line.subject is not None:
            first.setdefault(line.subject, line)
    erased: list[str] = []
    with transaction.atomic():
        live = set(
            DataSubjectKey.objects.select_for_update()
            .filter(ref__in=list(first), key__isnull=False)
            .values_list("ref", flat=True)
        )
        done: list[str] = []
        for hook in _before_reapply:
            done += hook(set(live))
        if done:  # a hook may have erased some of the keys itself, through its own service
            still = DataSubjectKey.objects.filter(ref__in=list(live), key__isnull=False).values_list("ref", flat=True)
            erased += sorted(live - set(still))
            live &= set(still)
        actor = _system_actor()
        for ref, line in first.items():
            if ref not in live:
                continue
            DataSubjectKey.objects.filter(ref=ref).update(key=None, erased_at=timezone.now())
            ledger_append(
                actor=actor,
                action="ledger.data_subject.erased",
                subject=Subject(type="data_subject", id=ref),
                payload={"reason": REAPPLIED_REASON, "erased_at": line.erased_at, "journal_entry": line.entry},
            )
            erased.append(ref)
    for words in done:
        say(words)
    if lines:
        say(
            f"erasure journal {journal_path()}: {len(first)} subject(s) named, {len(erased)} key(s) the backup "
            "brought back erased again"
        )
    return erased


def journal_complete() -> int:
    """Add to the journal every key erased in this database that it does not name yet; returns how many."""
    from audits.ledger.models import DataSubjectKey, Entry

    named = {line.subject for line in journal_read() if line.subject is not None}
    missing = list(DataSubjectKey.objects.filter(key__isnull=True).exclude(ref__in=named).order_by("erased_at", "ref"))
    for row in missing:
        entry = (
            Entry.objects.filter(action="ledger.data_subject.erased", subject_type="data_subject", subject_id=row.ref)
            .order_by("index")
            .values_list("index", flat=True)
            .first()
        )
        journal_append(subject_ref=row.ref, erased_at=row.erased_at or timezone.now(), entry=entry)
    return len(missing)


def journal_blobs() -> set[str]:
    """The artifact blobs the journal says were erased (their SHA-256 names)."""
    return {line.blob for line in journal_read() if line.blob is not None}


def erased_keys_present() -> list[str]:
    """The database against its ledger: subjects whose erasure the ledger records and whose key the
    vault still holds (a database changed around the service, or restored from a mixed copy)."""
    from audits.ledger.models import DataSubjectKey, Entry

    refs = set(
        Entry.objects.filter(action="ledger.data_subject.erased", subject_type="data_subject").values_list(
            "subject_id", flat=True
        )
    )
    return sorted(DataSubjectKey.objects.filter(ref__in=refs, key__isnull=False).values_list("ref", flat=True))
