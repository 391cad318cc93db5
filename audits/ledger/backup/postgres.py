"""PostgreSQL: pg_dump of a snapshot exported while the ledger head is locked, and pg_restore in
one transaction, verified first in a scratch database beside the target (when the role may create
one); the client tools run from an argument list with libpq's environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from audits.ledger.backup.layout import CHECKPOINT_LOG, PG_DUMP_FILE, BackupError, _BackupDir
from audits.ledger.backup.manifest import _applied_migrations


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).is_file():
                return str(folder / name)
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client tools (Debian: postgresql-client) of the "
            "server's major version or newer, or put them on PATH"
        )
    return found


def _pg_env() -> dict[str, str]:
    """libpq's variables for Django's connection settings (the password never on a command line)."""
    db = connection.settings_dict
    env = dict(os.environ)
    for variable, value in (
        ("PGDATABASE", db["NAME"]), ("PGUSER", db["USER"]), ("PGPASSWORD", db["PASSWORD"]),
        ("PGHOST", db["HOST"]), ("PGPORT", str(db["PORT"] or "")),
    ):  # fmt: skip
        if value:
            env[variable] = str(value)
    libpq = {
        "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
        "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME", "options": "PGOPTIONS",
    }  # fmt: skip
    for option, value in (db.get("OPTIONS") or {}).items():
        if option in libpq:
            env[libpq[option]] = str(value)
    return env


def _run_pg(args: list[str], what: str) -> None:
    result = subprocess.run(args, env=_pg_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit status {result.returncode}): {result.stderr.strip()[-2000:]}")


def _snapshot_postgresql(out: _BackupDir) -> dict[str, Any]:
    from django.db import connections

    from audits.ledger.selectors import head_tree, latest_checkpoint

    pg_dump = _pg_tool("pg_dump")
    exporter = connections.create_connection("default")  # a second session, in autocommit
    try:
        with transaction.atomic():
            head = head_tree(lock=True)  # appends and checkpoints wait: the log and the rows agree
            state = {
                "tree_size": head.size,
                "latest_checkpoint": latest_checkpoint(),
                "migrations": _applied_migrations(),
            }
            log = Path(settings.LEDGER_CHECKPOINT_LOG)
            if log.is_file():
                out.copy(log, CHECKPOINT_LOG)
            with exporter.cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = str(cursor.fetchone()[0])
        # The head lock is released; pg_dump dumps the snapshot taken while it was held.
        target = out.root / PG_DUMP_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        _run_pg([pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-password", f"--file={target}"], "pg_dump")
    finally:
        exporter.close()
    os.chmod(out.root / PG_DUMP_FILE, 0o600)
    out.record(PG_DUMP_FILE)
    return state


def _restore_postgresql(dump: Path, database: str | None = None) -> None:
    pg_restore = _pg_tool("pg_restore")
    connection.close()
    # --clean: a migrated but empty database (or, with --force, an old one) is replaced object by
    # object; one transaction, so a failed load leaves the database as it was.
    _run_pg(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
         "--exit-on-error", "--no-password", f"--dbname={database or connection.settings_dict['NAME']}", str(dump)],
        "pg_restore",
    )  # fmt: skip


def _scratch_database(action: str, name: str) -> bool:
    """``CREATE`` or ``DROP`` the scratch database ``name`` beside the target, on a session of its
    own (outside any transaction, as PostgreSQL requires); False when this role may not."""
    from django.db import DatabaseError, connections

    session = connections.create_connection("default")
    try:
        with session.cursor() as cursor:
            quoted = session.ops.quote_name(name)
            if action == "CREATE":
                cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")  # a crashed restore's leftover
                cursor.execute(f"CREATE DATABASE {quoted}")
            else:
                cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    except DatabaseError:
        return False
    finally:
        session.close()
    return True


def _restore_postgresql_staged(dump: Path, verify: Callable[[], Any]) -> tuple[bool, Any]:
    """Load the dump into a scratch database beside the target and run ``verify`` there; only if it
    passes is the same dump (its SHA-256 checked against the manifest) loaded into the target. A
    backup that fails verification leaves the target as it was. Returns ``(False, None)``, having
    touched nothing, when this role may not create a database (the caller then loads and verifies
    in place)."""
    db = connection.settings_dict
    target = db["NAME"]
    scratch = f"{target}_restoring"[:63]
    connection.close()
    if not _scratch_database("CREATE", scratch):
        return False, None
    try:
        _restore_postgresql(dump, scratch)
        db["NAME"] = scratch
        try:
            result = verify()
        finally:
            connection.close()
            db["NAME"] = target
    finally:
        _scratch_database("DROP", scratch)
    _restore_postgresql(dump, target)
    return True, result
