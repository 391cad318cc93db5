"""SQLite with write transactions queued on a lock file instead of SQLite's busy-wait.

SQLite lets one writer in at a time; the others retry on a sleep schedule that grows to 100 ms
(``sqlite3_busy_timeout``), so under many concurrent writers the lock sits idle between a commit
and the next retry and the unlucky writer waits seconds. Here every write transaction
(``BEGIN IMMEDIATE``, see ``transaction_mode`` in the settings) first takes an exclusive
``flock`` on ``<database>.writer-lock`` and gives it up at commit or rollback: waiting writers
poll it every 50 microseconds for their first 40 tries (a few milliseconds: most waits end within
a commit or two), then every half millisecond, so the next writer starts as soon as the last one
commits. Writes outside a transaction (autocommit statements) still rely on SQLite's busy timeout,
and SQLite's own lock still guards every write: the file lock only orders the queue.

Waiting longer than the database ``timeout`` option raises SQLite's own ``database is locked``
error, as the busy timeout would.

Why not Django's own SQLite backend with the same options (``transaction_mode`` IMMEDIATE and
``timeout``): on ``bench.approvals`` (2026-12-06, the same code otherwise, three alternating runs
on a quiet host) it made 225-254 decisions/s at a p99 of 83-99 ms, this one 271-350/s at 57-76 ms,
because SQLite's busy handler sleeps 1, 2, 5, 10 ms and more between tries while a decision holds
the write lock for about 1.5 ms.

Only public methods of Django's backend are extended (``set_autocommit``, which opens a
transaction, and ``commit``, ``rollback``, ``close``, which end it), as Django's documentation on
subclassing the built-in backends allows.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

POLL_S = 0.0005
FIRST_POLL_S, FIRST_POLLS = 0.00005, 40


class DatabaseWrapper(base.DatabaseWrapper):
    writer_fd: int | None = None
    writer_locked = False

    def writer_lock(self) -> None:
        if self.writer_locked:
            return
        if self.writer_fd is None:
            self.writer_fd = os.open(f"{self.settings_dict['NAME']}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + float(self.settings_dict["OPTIONS"].get("timeout", 5))
        polls = 0
        while True:
            try:
                fcntl.flock(self.writer_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OperationalError("database is locked (waited for the writer lock)") from None
                polls += 1
                time.sleep(FIRST_POLL_S if polls <= FIRST_POLLS else POLL_S)
        self.writer_locked = True

    def writer_unlock(self) -> None:
        if self.writer_locked and self.writer_fd is not None:
            fcntl.flock(self.writer_fd, fcntl.LOCK_UN)
        self.writer_locked = False

    def set_autocommit(self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False) -> None:
        if autocommit:
            # Before the commit hooks that turning autocommit back on runs: they write nothing
            # under this transaction.
            self.writer_unlock()
            super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
            return
        # Closing a connection (a failed health check) and opening one (which turns autocommit
        # on) both give the lock up: done before it is taken.
        self.close_if_health_check_failed()
        self.ensure_connection()
        self.writer_lock()
        try:
            super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
        except BaseException:
            self.writer_unlock()
            raise

    def commit(self) -> Any:
        try:
            return super().commit()
        finally:
            if not self.in_atomic_block:  # inside one, Django refuses to end the transaction
                self.writer_unlock()

    def rollback(self) -> Any:
        try:
            return super().rollback()
        finally:
            if not self.in_atomic_block:
                self.writer_unlock()

    def close(self) -> Any:
        try:
            return super().close()
        finally:
            self.writer_unlock()
            if self.writer_fd is not None:
                os.close(self.writer_fd)
                self.writer_fd = None
