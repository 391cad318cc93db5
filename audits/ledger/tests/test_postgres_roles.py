"""PostgreSQL: the application's role may append to the ledger and nothing more (no UPDATE,
DELETE or TRUNCATE), on top of the triggers; and the triggers refuse TRUNCATE too. Runs in the
scale-mode pass of the suite (PostgreSQL); skipped on SQLite, whose triggers are tested elsewhere."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from audits.ledger.services import Subject, ledger_append

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL grants and triggers"),
]


def _connect(role: str, password: str) -> Any:
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"] or "localhost", port=db["PORT"] or 5432, dbname=db["NAME"], user=role,
                           password=password, autocommit=True)  # fmt: skip


def test_the_application_role_cannot_rewrite_the_ledger(people: dict[str, Any]) -> None:
    entry = ledger_append(actor=people["system"], action="test.entry", subject=Subject("test", "1"), payload={})
    role, password = f"gov_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', [password])
    try:
        call_command("ledger", "grant-app-role", role)
        with _connect(role, password) as app:
            assert app.execute("SELECT count(*) FROM ledger_entry").fetchone()[0] >= 1
            app.execute("UPDATE governance_project SET description = 'edited' WHERE slug = 'assistant'")
            for statement in (
                f'UPDATE ledger_entry SET action = $$forged$$ WHERE "index" = {entry.index}',  # noqa: S608
                f'DELETE FROM ledger_entry WHERE "index" = {entry.index}',  # noqa: S608
                "TRUNCATE ledger_entry",
                "DELETE FROM ledger_checkpoint",
                "CREATE TABLE sneaky (id int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(statement)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'GRANT "{role}" TO CURRENT_USER')  # DROP OWNED needs membership
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')


def test_the_triggers_refuse_truncate_even_for_the_owner(people: dict[str, Any]) -> None:
    ledger_append(actor=people["system"], action="test.entry", subject=Subject("test", "1"), payload={})
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute("TRUNCATE ledger_entry CASCADE")
