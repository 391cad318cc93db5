"""SQLite with write transactions queued on a lock file instead of SQLite's busy-wait.

SQLite lets one writer in at a time; the others retry on a sleep schedule that grows to 100 ms
(``sqlite3_busy_timeout``), so under many concurrent writers the lock sits idle between a commit
and the next retry and the unlucky writer waits seconds. Here every write transaction
(``BEGIN IMMEDIATE``, see ``transaction_mode`` in the settings) first takes an exclusive
``flock`` on ``<database>.writer-lock`` and gives it up at commit or rollback: waiting writers
poll it every 50 microseconds for their first 40 tries (a few milliseconds: most waits end within
a commit or two), then every half millisecond, so the next writer starts as soon as the last one
commits. Writes outside a transaction (autocommit statements) still rely on SQLite's busy timeout.

Waiting longer than the database ``timeout`` option raises SQLite's own ``database is locked``
error, as the busy timeout would.

Its cursors also remember the ``?`` form of the statements they convert from Django's ``%s``
(a regular expression per statement otherwise): the application sends the same few hundred
statements over and over.
"""

from __future__ import annotations

import fcntl
import os
import time
from functools import lru_cache
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

POLL_S = 0.0005
FIRST_POLL_S, FIRST_POLLS = 0.00005, 40


@lru_cache(maxsize=2048)
def _qmark(query: str) -> str:
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class CursorWrapper(base.SQLiteCursorWrapper):
    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return _qmark(query)
        return super().convert_query(query, param_names=param_names)


class DatabaseWrapper(base.DatabaseWrapper):
    _writer_fd: int | None = None
    _writer_locked = False

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=CursorWrapper)

    def _writer_lock(self) -> None:
        if self._writer_fd is None:
            self._writer_fd = os.open(f"{self.settings_dict['NAME']}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + float(self.settings_dict["OPTIONS"].get("timeout", 5))
        polls = 0
        while True:
            try:
                fcntl.flock(self._writer_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OperationalError("database is locked (waited for the writer lock)") from None
                polls += 1
                time.sleep(FIRST_POLL_S if polls <= FIRST_POLLS else POLL_S)
        self._writer_locked = True

    def _writer_unlock(self) -> None:
        if self._writer_locked and self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
        self._writer_locked = False

    def _start_transaction_under_autocommit(self) -> None:
        self._writer_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._writer_unlock()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()
        finally:
            self._writer_unlock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()
        finally:
            self._writer_unlock()

    def _close(self) -> Any:
        try:
            return super()._close()
        finally:
            self._writer_unlock()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
