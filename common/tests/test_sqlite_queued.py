"""The SQLite backend that queues write transactions on a lock file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError

from common.db.sqlite_queued.base import DatabaseWrapper


@pytest.fixture(autouse=True)
def _own_connections(django_db_blocker: object) -> Iterator[None]:
    """These tests open their own connections to their own file, not the test database."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        yield


def _wrapper(path: Path, timeout: float) -> DatabaseWrapper:
    settings = {
        "ENGINE": "common.db.sqlite_queued", "NAME": str(path), "USER": "", "PASSWORD": "", "HOST": "", "PORT": "",
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": timeout, "init_command": "PRAGMA journal_mode=WAL"},
        "TIME_ZONE": None, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False,
        "TEST": {},
    }  # fmt: skip
    return DatabaseWrapper(settings, alias=f"queued-{id(settings)}")


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    first = _wrapper(tmp_path / "db", 5)
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE t (writer TEXT)")
    first.set_autocommit(
        False, force_begin_transaction_with_broken_autocommit=True
    )  # BEGIN IMMEDIATE, under the writer lock
    with first.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES ('first')")
    order: list[str] = []

    def write_second() -> None:
        second = _wrapper(tmp_path / "db", 5)
        second.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        with second.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES ('second')")
        order.append("second")
        second.commit()
        second.set_autocommit(True)
        second.close()

    thread = threading.Thread(target=write_second)
    thread.start()
    time.sleep(0.3)
    assert order == []  # still queued behind the first writer
    order.append("first")
    first.commit()
    first.set_autocommit(True)
    thread.join(timeout=5)
    assert order == ["first", "second"]
    with first.cursor() as cursor:
        cursor.execute("SELECT writer FROM t ORDER BY rowid")
        assert cursor.fetchall() == [("first",), ("second",)]
    first.close()


def test_waiting_longer_than_the_timeout_is_a_lock_error_and_releases_nothing(tmp_path: Path) -> None:
    first, second = _wrapper(tmp_path / "db", 5), _wrapper(tmp_path / "db", 0.2)
    first.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    with pytest.raises(OperationalError, match="waited for the writer lock"):
        second.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    first.rollback()
    first.set_autocommit(True)
    second.set_autocommit(True)
    second.set_autocommit(
        False, force_begin_transaction_with_broken_autocommit=True
    )  # the lock is free again once the first writer is done
    second.rollback()
    second.set_autocommit(True)
    first.close()
    second.close()


def test_a_rollback_or_a_close_gives_the_lock_up(tmp_path: Path) -> None:
    first, second = _wrapper(tmp_path / "db", 5), _wrapper(tmp_path / "db", 0.2)
    for end in (first.rollback, first.close):
        first.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        end()
        first.set_autocommit(True)
        second.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)  # not refused
        second.rollback()
        second.set_autocommit(True)
    first.close()
    second.close()
