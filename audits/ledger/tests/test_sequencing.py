"""Deferred sequencing on PostgreSQL: writers record entries without a shared lock, the integrator
adds them to the tree. Real processes on a database of their own: eight concurrent appenders
(some of whose transactions roll back) beside a running integrator, and the integrator killed
before every one of its statements. Runs in the scale-mode pass (PostgreSQL); skipped on SQLite,
which always integrates inline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from conftest import ROOT, _test_database_url, manage_in, subprocess_env

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="deferred sequencing needs PostgreSQL")

WORKERS = 8
SECONDS = 4
ABORT_EVERY = 9  # every ninth transaction of every other worker rolls back after recording its entry


def _admin(url: str) -> psycopg.Connection:
    parts = urlsplit(url)
    return psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                           password=parts.password, dbname="postgres", autocommit=True)  # fmt: skip


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A database migrated once (deferred sequencing) on the suite's PostgreSQL server, and its var/
    (the signing key): each test copies it (``CREATE DATABASE ... TEMPLATE``, about a second)."""
    server = _test_database_url()
    parts = urlsplit(server)
    name = f"{parts.path.lstrip('/')}_seq_{uuid.uuid4().hex[:8]}"
    var_dir = tmp_path_factory.mktemp("sequencing-var")
    with _admin(server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    env = _env(urlunsplit(parts._replace(path=f"/{name}")), var_dir)
    for args in (("ledger", "keygen"), ("migrate", "--noinput")):
        result = manage_in(env, *args)
        assert result.returncode == 0, result.stderr
    yield name, var_dir
    with _admin(server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(database_url: str, var_dir: Path) -> dict[str, str]:
    return subprocess_env(
        embedded=False, GOV_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING",
        DATABASE_URL=database_url, LEDGER_SEQUENCING="deferred",
    )  # fmt: skip


@pytest.fixture
def deferred_env(migrated_template: tuple[str, Path], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh copy of the migrated database, deferred sequencing, its own var/ (checkpoint log)."""
    template, var_dir = migrated_template
    server = _test_database_url()
    parts = urlsplit(server)
    name = f"{template}_{uuid.uuid4().hex[:6]}"
    with _admin(server) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    (tmp_path / "keys").mkdir()
    for key in (var_dir / "keys").iterdir():
        (tmp_path / "keys" / key.name).write_bytes(key.read_bytes())
        (tmp_path / "keys" / key.name).chmod(key.stat().st_mode)
    yield _env(urlunsplit(parts._replace(path=f"/{name}")), tmp_path)
    with _admin(server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(env: dict[str, str], sql: str) -> list[tuple[object, ...]]:
    parts = urlsplit(env["DATABASE_URL"])
    with psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                         password=parts.password, dbname=parts.path.lstrip("/")) as conn:  # fmt: skip
        return conn.execute(sql).fetchall()


def test_concurrent_writers_record_without_a_shared_lock_and_the_integrator_keeps_the_tree_gapless(
    deferred_env: dict[str, str],
) -> None:
    integrator = subprocess.Popen(
        [sys.executable, "manage.py", "ledger", "integrate", "--follow"], cwd=ROOT, env=deferred_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        command = [sys.executable, "-m", "audits.ledger.tests.appender"]
        procs = [
            subprocess.Popen(
                [*command, str(w), str(SECONDS), str(ABORT_EVERY if w % 2 else 0)],
                cwd=ROOT,
                env=deferred_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(WORKERS)
        ]
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        integrator.terminate()
        _, integrator_err = integrator.communicate(timeout=30)
    assert [r["errors"] for r in reports] == [[]] * WORKERS
    appended, aborted = sum(r["appended"] for r in reports), sum(r["aborted"] for r in reports)
    assert appended > 0 and aborted > 0

    drained = manage_in(deferred_env, "ledger", "integrate")  # what the running integrator had not reached yet
    assert drained.returncode == 0, drained.stderr
    rows = _rows(deferred_env, 'SELECT "index", action, body FROM ledger_entry ORDER BY "index"')
    assert [row[0] for row in rows] == list(range(len(rows)))  # gapless
    actions = [row[1] for row in rows]
    # Each rolled-back index followed by a committed entry is filled, once; one rolled back after
    # the last committed entry leaves no hole (at most one per aborting worker: its last transaction).
    voids = actions.count("ledger.index_void")
    assert aborted - WORKERS // 2 <= voids <= aborted
    assert "load.aborted" not in actions
    seen: dict[int, list[int]] = {}
    for _, action, body in rows:
        if action == "load.append":
            payload = json.loads(bytes(body))["payload"]
            seen.setdefault(payload["worker"], []).append(payload["seq"])
    for report in reports:  # every committed entry exactly once, each worker's in its own order
        assert seen.get(report["worker"], []) == list(range(report["appended"]))
    assert _rows(deferred_env, "SELECT size FROM ledger_ledgerhead") == [(len(rows),)]

    assert manage_in(deferred_env, "ledger", "checkpoint").returncode == 0
    verify = manage_in(deferred_env, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr + integrator_err
    assert verify.stdout.startswith(f"OK {len(rows)} entries")


def test_the_integrator_killed_before_any_of_its_steps_loses_and_duplicates_nothing(
    deferred_env: dict[str, str],
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "audits.ledger.tests.integrator_crash"], cwd=ROOT, env=deferred_env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["recorded_before"] == 80  # the rolled-back transaction's entry never committed
    assert report["killed_steps"] >= 5  # lock, read, void, nodes, head, commit: each a point of death
    assert all(s["head"] == 0 and s["head_matches_entries"] and s["voids"] == 0 for s in report["states_after_kills"])
    assert report["final"] == {"head": 81, "head_matches_entries": True, "entries": 81, "voids": 1}
    assert report["final_indexes_contiguous"]
