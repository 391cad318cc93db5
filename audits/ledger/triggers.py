"""Database triggers that refuse UPDATE, DELETE and TRUNCATE on the append-only ledger tables.

Installed by a migration, for SQLite and PostgreSQL. They stop mistakes and anyone writing
through the application's connection; an operator who drops them can still rewrite the tables,
which the signed checkpoints kept outside the database then expose (``ledger verify``).
"""

from __future__ import annotations

from typing import Any

APPEND_ONLY_TABLES = ("ledger_entry", "ledger_node", "ledger_checkpoint", "ledger_entryscope")
# The tables of migration 0002; the entries' attribution (``ledger_entryscope``) came with 0003.
FIRST_TABLES = APPEND_ONLY_TABLES[:3]


def _sqlite_install(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


_PG_FUNCTIONS = [
    """
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$
""",
    # TRUNCATE of an empty table changes nothing and is let through (test harnesses flush every
    # table between tests); TRUNCATE of a table with rows is refused.
    """
CREATE OR REPLACE FUNCTION ledger_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    has_rows boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO has_rows;
    IF has_rows THEN
        RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$
""",
]


def _pg_install(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}",
        f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate()",
    ]


def install_statements(vendor: str, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> list[str]:
    if vendor == "sqlite":
        return [sql for table in tables for sql in _sqlite_install(table)]
    if vendor == "postgresql":
        return _PG_FUNCTIONS + [sql for table in tables for sql in _pg_install(table)]
    raise NotImplementedError(f"no append-only triggers for database vendor {vendor!r}")


def drop_statements(vendor: str, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> list[str]:
    if vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {t}_{op}" for t in tables for op in ("no_update", "no_delete")]
    if vendor == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {t}_{op} ON {t}" for t in tables for op in ("no_change", "no_truncate")]
    raise NotImplementedError(f"no append-only triggers for database vendor {vendor!r}")


def install(connection: Any, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> None:
    with connection.cursor() as cursor:
        for sql in install_statements(connection.vendor, tables):
            cursor.execute(sql)


def drop_rollback_unsafe(connection: Any, tables: tuple[str, ...] = APPEND_ONLY_TABLES) -> None:
    """Remove the triggers. For tests that play an attacker, and nothing else."""
    with connection.cursor() as cursor:
        for sql in drop_statements(connection.vendor, tables):
            cursor.execute(sql)


def wipe_for_tests_rollback_unsafe(connection: Any) -> None:
    """Empty the ledger tables and put the triggers back. Only the test suite calls this, between
    tests whose writes were committed (transactional tests)."""
    drop_rollback_unsafe(connection)
    with connection.cursor() as cursor:
        for table in (*APPEND_ONLY_TABLES, "ledger_ledgerhead"):
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)
    install(connection)


def app_role_grants(role: str, database: str) -> list[str]:
    """PostgreSQL statements giving ``role`` (the application's, not the owner's) what the service
    needs: read and write on every table, except UPDATE, DELETE and TRUNCATE on the append-only
    tables, and no DDL. With the triggers this is the second wall: a web or worker process, even
    compromised, cannot rewrite an entry through its own connection."""
    from psycopg import sql

    ident = sql.Identifier(role).as_string()
    statements = [
        f"GRANT CONNECT ON DATABASE {sql.Identifier(database).as_string()} TO {ident}",
        f"GRANT USAGE ON SCHEMA public TO {ident}",
        f"REVOKE CREATE ON SCHEMA public FROM {ident}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ident}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {ident}",
    ]
    statements += [f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {ident}" for table in APPEND_ONLY_TABLES]
    return statements
