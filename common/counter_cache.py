"""A cache of integer counters in a SQLite file, shared by every process of one machine.

The rate limits and the token lockout (common/ratelimit.py) count requests in a cache that every
web process sees and that increments atomically: not the local-memory cache (one per process), nor
the file or database caches (their ``incr`` is a read then a write, so two processes lose counts).
The embedded default has no server to run memcached or Redis, so this backend keeps its counters
in a SQLite file of its own: one ``UPSERT`` or ``UPDATE ... RETURNING`` statement per operation,
atomic across processes, and no write lock taken on the main database. ``hit`` (count one more,
starting the counter if there is none) is one statement where ``add`` then ``incr`` would be two
writes: the rate limit runs it on every limited request. At scale, ``CACHE_URL=redis://...``
selects Django's Redis cache instead (settings).

Only integers are stored (nothing is pickled); the counters are a brake, not a record: the file
may be deleted at any time and is not made durable on power loss (``synchronous=NORMAL``).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

_SCHEMA = "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)"
# One insert in this many also deletes the expired rows, so the file stays small without a job.
_PURGE_ONE_IN = 200


class SQLiteCounterCache(BaseCache):
    """``CACHES`` backend: ``LOCATION`` is the path of the SQLite file; values must be integers."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.path = Path(location)
        self.busy_timeout_s = float(params.get("OPTIONS", {}).get("timeout", 5))
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        # One connection per thread and per process: a connection must not cross a fork (gunicorn).
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(_SCHEMA)
        self._local.held = (os.getpid(), connection)
        return connection

    def _expires(self, timeout: float | object | None) -> float:
        seconds = self.get_backend_timeout(timeout)
        return math.inf if seconds is None else float(seconds)

    @staticmethod
    def _integer(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"SQLiteCounterCache stores integers only, not {type(value).__name__}")
        return value

    def add(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        now = time.time()
        cursor = self._db().execute(
            "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires "
            "WHERE counters.expires <= ?",
            (key, self._integer(value), self._expires(timeout), now),
        )
        added = cursor.rowcount == 1
        if added and random.randrange(_PURGE_ONE_IN) == 0:  # noqa: S311 (not security: a sampling of clean-ups)
            self._db().execute("DELETE FROM counters WHERE expires <= ?", (now,))
        return added

    def hit(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> int:
        """Count one more on ``key`` and return its count: 1 for a new (or expired) key, which then
        expires after ``timeout``; an existing key keeps its expiry. One atomic statement."""
        key = self.make_and_validate_key(key, version=version)
        now = time.time()
        row = (
            self._db()
            .execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, 1, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN counters.expires <= ? THEN 1 ELSE counters.value + 1 END, "
                "expires = CASE WHEN counters.expires <= ? THEN excluded.expires ELSE counters.expires END "
                "RETURNING value",
                (key, self._expires(timeout), now, now),
            )
            .fetchone()
        )
        return int(row[0])

    def get_many(self, keys: Any, version: int | None = None) -> dict[str, Any]:
        """The live ones of ``keys`` and their values, in one statement."""
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not made:
            return {}
        found = self._db().execute(
            "SELECT key, value FROM counters WHERE key IN (SELECT value FROM json_each(?)) AND expires > ?",
            (json.dumps(list(made)), time.time()),
        )
        return {made[key]: value for key, value in found}

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        row = (
            self._db()
            .execute("SELECT value FROM counters WHERE key = ? AND expires > ?", (key, time.time()))
            .fetchone()
        )
        return default if row is None else row[0]

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        self._db().execute(
            "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
            (key, self._integer(value), self._expires(timeout)),
        )

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        cursor = self._db().execute(
            "UPDATE counters SET expires = ? WHERE key = ? AND expires > ?",
            (self._expires(timeout), key, time.time()),
        )
        return cursor.rowcount == 1

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        row = (
            self._db()
            .execute(
                "UPDATE counters SET value = value + ? WHERE key = ? AND expires > ? RETURNING value",
                (self._integer(delta), key, time.time()),
            )
            .fetchone()
        )
        if row is None:
            raise ValueError(f"Key '{key}' not found")
        return int(row[0])

    def delete(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._db().execute("DELETE FROM counters WHERE key = ?", (key,)).rowcount == 1

    def has_key(self, key: str, version: int | None = None) -> bool:
        return self.get(key, version=version) is not None

    def clear(self) -> None:
        self._db().execute("DELETE FROM counters")

    def close(self, **kwargs: Any) -> None:
        # Django closes caches at the end of every request; the connection is kept for the next.
        pass
