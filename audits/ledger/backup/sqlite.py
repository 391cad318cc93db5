"""SQLite: a consistent copy of a live database, the backend's writer lock, the snapshot a backup
takes under it, and a restore staged beside the target and verified before it lands.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from audits.ledger.backup.layout import CHECKPOINT_LOG, SQLITE_FILE, BackupError, _BackupDir
from audits.ledger.backup.manifest import _applied_migrations


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (online backup API, one step), as one file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file, no -wal
        finally:
            dst.close()
    finally:
        src.close()


@contextmanager
def _sqlite_writer_lock(database: Path, timeout_s: float) -> Iterator[None]:
    """The lock ``common.db.sqlite_queued`` takes around every write transaction: while it is held,
    no transaction of the service writes (a checkpoint included)."""
    fd = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackupError(f"{database} stayed locked by a writer for {timeout_s:g} s; try again") from None
                time.sleep(0.001)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _snapshot_sqlite(out: _BackupDir) -> dict[str, Any]:
    from audits.ledger.selectors import latest_checkpoint, tree_size

    database = Path(connection.settings_dict["NAME"])
    timeout = float(connection.settings_dict["OPTIONS"].get("timeout", 20))
    connection.close()
    with _sqlite_writer_lock(database, timeout):
        state = {
            "tree_size": tree_size(),
            "latest_checkpoint": latest_checkpoint(),
            "migrations": _applied_migrations(),
        }
        log = Path(settings.LEDGER_CHECKPOINT_LOG)
        if log.is_file():
            out.copy(log, CHECKPOINT_LOG)
        connection.close()
        _sqlite_copy(database, out.root / SQLITE_FILE)
    os.chmod(out.root / SQLITE_FILE, 0o600)
    out.record(SQLITE_FILE)
    return state


def _restore_sqlite_staged(source: Path, prepare: Callable[[], Any]) -> Any:
    """Copy the backup's database next to the target, run ``prepare`` on it there (verification,
    then the erasure journal), then copy it into the target (online backup API, under the writer
    lock): a database that fails verification never lands, and the target is not touched."""
    db = connection.settings_dict
    target = Path(db["NAME"])
    timeout = float(db["OPTIONS"].get("timeout", 20))
    staging = target.with_name(f"{target.name}.restoring")
    staged = [staging, *(Path(f"{staging}{suffix}") for suffix in ("-wal", "-shm", ".writer-lock"))]
    try:
        _sqlite_copy(source, staging)
        connection.close()
        db["NAME"] = str(staging)
        try:
            result = prepare()
        finally:
            connection.close()
            db["NAME"] = str(target)
        with _sqlite_writer_lock(target, timeout):
            src = sqlite3.connect(staging)
            dst = sqlite3.connect(target, timeout=timeout)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
    finally:
        for path in staged:
            with suppress(FileNotFoundError):
                path.unlink()
    return result
