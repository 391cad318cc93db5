"""The SQLite counter cache counts right when several processes increment at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.counter_cache import SQLiteCounterCache
from conftest import ROOT, subprocess_env

INCREMENT = """
import sys
from common.counter_cache import SQLiteCounterCache
cache = SQLiteCounterCache(sys.argv[1], {})
cache.add("k", 0, 60)
for _ in range(int(sys.argv[2])):
    cache.incr("k")
    cache.hit("h", 60)
"""


def test_increments_are_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "counters.sqlite3")
    workers = [
        subprocess.Popen([sys.executable, "-c", INCREMENT, path, "300"], cwd=ROOT, env=subprocess_env())
        for _ in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    assert SQLiteCounterCache(path, {}).get_many(["k", "h", "missing"]) == {"k": 1200, "h": 1200}


def test_add_expiry_and_integers_only(tmp_path: Path) -> None:
    cache = SQLiteCounterCache(str(tmp_path / "c.sqlite3"), {})
    assert cache.add("k", 5, 60) is True and cache.add("k", 7, 60) is False and cache.get("k") == 5
    assert cache.incr("k", 2) == 7
    cache.set("gone", 1, 0)  # a timeout of 0 expires at once
    assert cache.get("gone") is None and cache.add("gone", 3, 60) is True  # an expired key is free
    with pytest.raises(ValueError):
        cache.incr("missing")
    with pytest.raises(TypeError):
        cache.set("k", "text")
    assert cache.delete("k") is True and cache.get("k", "default") == "default"


def test_hit_starts_counts_and_restarts_an_expired_counter(tmp_path: Path) -> None:
    cache = SQLiteCounterCache(str(tmp_path / "c.sqlite3"), {})
    assert [cache.hit("w", 60) for _ in range(3)] == [1, 2, 3]
    cache.set("old", 41, 0)  # expired: the next hit starts again at 1, with the new timeout
    assert cache.hit("old", 60) == 1 and cache.hit("old", 60) == 2
    assert cache.get_many(["w", "old", "none"]) == {"w": 3, "old": 2} and cache.get_many([]) == {}
