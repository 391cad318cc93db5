"""Crypto-shredding on SQLite when another connection holds a read transaction open: the WAL
checkpoint that removes the erased key's old page cannot complete until the read ends. The
erasure waits a little, then says so; the periodic task completes the purge afterwards."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from django.db import connection

from audits.ledger.models import DataSubjectKey
from audits.ledger.services import WAL_PURGE_WAIT_S, data_subject_erase, sqlite_wal_purge, vault_seal
from audits.ledger.tasks import checkpoint_if_grown

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),  # real commits, so on_commit runs
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the write-ahead log of SQLite"),
]
SUBJECT = "subject-wal-0001"


def _key_in_database_files(key: bytes) -> list[str]:
    database = Path(connection.settings_dict["NAME"])
    files = [database, database.with_name(database.name + "-wal")]
    return [path.name for path in files if path.exists() and key in path.read_bytes()]


def _sealed_key() -> bytes:
    vault_seal(subject_ref=SUBJECT, value={"email": "grace@example.org"})
    key = bytes(DataSubjectKey.objects.get(ref=SUBJECT).key)
    assert sqlite_wal_purge() and _key_in_database_files(key)  # checkpointed: the key sits in the database file
    return key


def _open_read(*, check_same_thread: bool = True) -> sqlite3.Connection:
    """Another connection in a read transaction, as a long export or verification holds one."""
    reader = sqlite3.connect(
        connection.settings_dict["NAME"], isolation_level=None, check_same_thread=check_same_thread
    )
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM ledger_entry").fetchone()
    return reader


def test_an_erasure_held_up_by_an_open_read_says_so_and_beat_completes_the_purge(
    actor: object, caplog: pytest.LogCaptureFixture
) -> None:
    key = _sealed_key()
    reader = _open_read()
    try:
        with caplog.at_level(logging.WARNING, logger="audits.ledger"):
            data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
        assert f"erasure of data subject {SUBJECT}: the SQLite write-ahead log could not be checkpointed" in caplog.text
        assert _key_in_database_files(key)  # what the warning says: the old page is still there
    finally:
        reader.close()
    checkpoint_if_grown()  # what beat runs every LEDGER_CHECKPOINT_EVERY_S
    assert _key_in_database_files(key) == []


def test_an_erasure_waits_for_a_short_read_to_end_and_purges_at_once(
    actor: object, caplog: pytest.LogCaptureFixture
) -> None:
    key = _sealed_key()
    reader = _open_read(check_same_thread=False)
    ends = threading.Timer(WAL_PURGE_WAIT_S / 4, reader.close)
    ends.start()
    try:
        with caplog.at_level(logging.WARNING, logger="audits.ledger"):
            data_subject_erase(actor=actor, subject_ref=SUBJECT, reason="GDPR Art. 17")
    finally:
        ends.join()
    assert "write-ahead log" not in caplog.text
    assert _key_in_database_files(key) == []
