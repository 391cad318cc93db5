"""Migration 0007: on SQLite the entries', nodes' and attributions' keys are the tables' rowids,
their rows and the append-only triggers survive the rebuild in both directions, and the tree
verifies before and after."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from audits.ledger.services import ledger_append
from audits.ledger.verification import ledger_verify

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the migration commits

TABLES = {"ledger_entry": '"index"', "ledger_node": '"key"', "ledger_entryscope": '"entry_index"'}


def _schema() -> dict[str, tuple[str, list[str]]]:
    """Each table's CREATE statement and the names of its indexes and triggers."""
    with connection.cursor() as cursor:
        found = {}
        for table in TABLES:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
            create = cursor.fetchone()[0]
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE tbl_name = %s AND type != 'table' ORDER BY name", [table]
            )
            found[table] = (create, [row[0] for row in cursor.fetchall()])
    return found


def _rows() -> dict[str, list[tuple[object, ...]]]:
    with connection.cursor() as cursor:
        dumped = {}
        for table, key in TABLES.items():
            cursor.execute(f"SELECT * FROM {table} ORDER BY {key}")  # noqa: S608 (fixed names)
            names = [d[0] for d in cursor.description]  # by name: the rebuild moves the key column last
            dumped[table] = sorted(tuple(sorted(zip(names, row, strict=True))) for row in cursor)
    return dumped


def _schema_with_keys(key_type: str, *, own_index: bool) -> dict[str, tuple[str, list[str]]]:
    """``_schema()``, checked: each key of ``key_type``, with or without an index of its own, and
    the append-only triggers in place."""
    found = _schema()
    for table, key in TABLES.items():
        create, others = found[table]
        assert f"{key} {key_type} NOT NULL PRIMARY KEY" in create, create
        assert (f"sqlite_autoindex_{table}_1" in others) == own_index, others
        assert {f"{table}_no_update", f"{table}_no_delete"} <= set(others), others
    return found


def _migrate(target: str) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([("ledger", target)])


def _refuses(sql: str) -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    except (IntegrityError, DatabaseError) as exc:
        return "append-only" in str(exc)
    return False


def test_keys_become_rowids_and_nothing_is_lost_either_way(actor: object, append: Callable[..., object]) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite storage change: on PostgreSQL the migration changes nothing (sqlmigrate: no-op)")
    append(37)
    rows, root = _rows(), ledger_verify().root
    assert len(rows["ledger_entry"]) == len(rows["ledger_entryscope"]) == 37 and rows["ledger_node"]
    try:
        _migrate("0006_vault_key_wrapping")
        # Before: the key's own index beside the hidden rowid, the B-tree an append no longer writes.
        before = _schema_with_keys("bigint", own_index=True)
        assert _rows() == rows and ledger_verify().root == root
    finally:
        _migrate("0007_rowid_keys")
    after = _schema_with_keys("integer", own_index=False)
    for table, key in TABLES.items():
        assert _refuses(f"DELETE FROM {table}") and _refuses(f"UPDATE {table} SET {key} = {key} + 1000")  # noqa: S608
    for table in TABLES:  # the admin's indexes and the triggers are all back
        assert after[table][1] == [name for name in before[table][1] if not name.startswith("sqlite_autoindex_")]
    assert _rows() == rows and ledger_verify().root == root
    ledger_append(actor=actor, action="test.after", payload={"i": 37})
    assert ledger_verify().tree_size == 38
