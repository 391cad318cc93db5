"""Sixteen approvers in sixteen processes race for the two slots of one pending request, on a
database file of their own (the embedded default: SQLite, WAL, the queued writer lock)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _racer(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.racer", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sixteen_approver_processes_fill_exactly_the_quorum(fresh_env: dict[str, str], tmp_path: Path) -> None:
    setup_proc = _racer(fresh_env, "setup")
    out, err = setup_proc.communicate(timeout=300)
    assert setup_proc.returncode == 0, err
    setup = json.loads(out.strip().splitlines()[-1])
    go = tmp_path / "go"
    procs = [_racer(fresh_env, "decide", user, str(setup["request"]), str(go)) for user in setup["approvers"]]
    for proc in procs:  # every process has set Django up and polls for the signal
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    outcomes = [r["outcome"] for r in results]
    assert all(r["late_s"] < 1.0 for r in results), results  # they really started together
    assert outcomes.count("ok") == 2, outcomes
    assert set(outcomes) <= {"ok", "request_closed", "slot_filled"}, outcomes  # no lock error, nothing else

    db = sqlite3.connect(tmp_path / "db.sqlite3")
    decisions = db.execute(
        "SELECT d.role, u.username FROM governance_approvaldecision d JOIN auth_user u ON u.id = d.approver_id"
    ).fetchall()
    assert sorted(role for role, _ in decisions) == ["compliance_officer", "data_steward"]
    assert {user for _, user in decisions} == {r["user"] for r in results if r["outcome"] == "ok"}
    assert db.execute("SELECT state FROM governance_approvalrequest").fetchall() == [("approved",)]
    indexes = [row[0] for row in db.execute('SELECT "index" FROM ledger_entry ORDER BY "index"')]
    assert indexes == list(range(len(indexes)))
    actions = [json.loads(body)["action"] for (body,) in db.execute("SELECT body FROM ledger_entry")]
    assert actions.count("approval.slot_filled") == 1 and actions.count("approval.approved") == 1
    db.close()
