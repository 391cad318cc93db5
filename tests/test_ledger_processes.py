"""The ledger under real processes, on a database file of its own: 16 concurrent appenders, and
crypto-shredding checked in the bytes of the database files themselves."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, manage_in

WORKERS = 16
SECONDS = 8


def test_sixteen_processes_append_gapless_without_loss_or_lock_errors(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "audits.ledger.tests.appender", str(w), str(SECONDS)],
            cwd=ROOT,
            env=fresh_env,
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
    assert [r["errors"] for r in reports] == [[]] * WORKERS  # no "database is locked", no failure at all
    total = sum(r["appended"] for r in reports)
    assert all(r["appended"] > 0 for r in reports)

    db = sqlite3.connect(tmp_path / "db.sqlite3")
    indexes = [row[0] for row in db.execute('SELECT "index" FROM ledger_entry ORDER BY "index"')]
    assert indexes == list(range(total))  # gapless, nothing lost, nothing twice
    seen = [json.loads(body)["payload"] for (body,) in db.execute("SELECT body FROM ledger_entry")]
    by_worker: dict[int, list[int]] = {}
    for payload in seen:
        by_worker.setdefault(payload["worker"], []).append(payload["seq"])
    for report in reports:
        assert sorted(by_worker[report["worker"]]) == list(range(report["appended"]))
    db.close()

    assert manage_in(fresh_env, "ledger", "checkpoint").returncode == 0
    verify = manage_in(fresh_env, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"OK {total} entries")


SHRED = """
from django.contrib.auth import get_user_model
from audits.ledger.models import DataSubjectKey
from audits.ledger.services import vault_seal, ledger_append, data_subject_erase, checkpoint_create
system = get_user_model().objects.get(username="system")
sealed = vault_seal(subject_ref="subject-0042", value={"email": "grace@example.org"})
ledger_append(actor=system, action="dataset_version.pii_found", payload={"who": sealed})
checkpoint_create()
print(bytes(DataSubjectKey.objects.get(ref="subject-0042").key).hex())
data_subject_erase(actor=system, subject_ref="subject-0042", reason="Art. 17")
checkpoint_create()
"""


def test_an_erased_key_leaves_no_copy_in_the_database_files(fresh_env: dict[str, str], tmp_path: Path) -> None:
    result = manage_in(fresh_env, "shell", "-c", SHRED)
    assert result.returncode == 0, result.stderr
    key = bytes.fromhex(result.stdout.strip().splitlines()[-1])
    files = [p for p in tmp_path.glob("db.sqlite3*") if p.is_file()]
    assert files
    for path in files:
        assert key not in path.read_bytes(), f"the erased key survives in {path.name}"
        assert b"grace@example.org" not in path.read_bytes()
    verify = manage_in(fresh_env, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
