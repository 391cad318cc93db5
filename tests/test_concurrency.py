"""Sixteen clients in sixteen processes decide approvals and append ledger entries for a minute, on
whichever database the suite runs on (the embedded SQLite, or PostgreSQL in scale mode).

Each client (tests/concurrency_client.py) works through the services as fast as it can: plain
appends, requests on its own dataset versions, approvals and rejections of the oldest few requests
in its inbox, so several clients often race for one slot. Afterwards: every operation a client
saw succeed is in the ledger exactly once and nothing else was written, the indexes run 0..n-1,
every request holds no more approvals than its quorum (exactly its quorum once approved), no
client met any error but the domain conflicts of a lost race, and ``ledger verify`` passes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from audits.ledger.models import Entry
from audits.ledger.services import checkpoint_create
from conftest import ROOT, _test_database_url, subprocess_env
from governance.models import ApprovalRequest, ApprovalState
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import approval_request_submit, project_create, project_role_grant
from registry.services import dataset_create, dataset_version_upload
from registry.tests.conftest import scan_version
from tests.concurrency_client import ACTION, ALLOWED_CONFLICTS, parse_tag

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CLIENTS = 16
SECONDS = 60.0  # CI runs the full minute; CONCURRENCY_TEST_SECONDS shortens it for a local run
VERSIONS_PER_CLIENT = 4
# Which kind of operation writes which ledger action, and where the entry keeps the tag.
ACTIONS = {
    "load.append": ("append", "tag"),
    "approval.requested": ("submit", "comment"),
    "approval.slot_filled": ("approve", "reason"),
    "approval.approved": ("approve", "reason"),
    "approval.rejected": ("reject", "reason"),
}


def _seconds() -> float:
    return float(os.environ.get("CONCURRENCY_TEST_SECONDS", SECONDS))


def _plan() -> dict[str, Any]:
    """A project, 16 people who each request (ML engineer) and approve (half data stewards, half
    compliance officers), four scanned dataset versions each (half of them high-risk: a steward
    and a compliance officer must approve; the others one steward) and one pending request on each,
    all made through the services."""
    users = get_user_model().objects
    system = users.get(username=SYSTEM_USERNAME)
    project = project_create(actor=system, slug="load", name="Load")
    people = []
    for i in range(CLIENTS):
        user = users.create_user(username=f"client-{i}")
        approver = Role.DATA_STEWARD if i % 2 else Role.COMPLIANCE_OFFICER
        for role in (Role.ML_ENGINEER, approver):
            project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
        people.append(users.get(pk=user.pk))
    dataset = dataset_create(
        actor=people[1], project=project, slug="d", name="D", purpose="test", lawful_basis="contract",
        retention_days=1, source="generated", data_steward=people[1],
    )  # fmt: skip
    clients = []
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        for i, person in enumerate(people):
            requests, risk = {}, {}
            for j in range(VERSIONS_PER_CLIENT):
                version, _ = dataset_version_upload(
                    actor=person, dataset=dataset, filename="t.jsonl", data=f'{{"t": "client {i} v{j}"}}\n'.encode()
                )
                scan_version(version, system)  # here, or by the suite's worker if it claimed it first
                risk[version.pk] = "high" if j % 2 == 0 else "normal"
                context = {"risk_tier": "high"} if risk[version.pk] == "high" else {}
                requests[version.pk] = approval_request_submit(
                    actor=person, subject_type="dataset_version", subject_id=str(version.pk), action=ACTION,
                    context=context, comment="setup",
                ).pk  # fmt: skip
            clients.append({"username": person.username, "steward": i % 2 == 1, "requests": requests, "risk": risk})
    return {"project": project.slug, "clients": clients}


def _client(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.concurrency_client", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sixteen_clients_decide_and_append_for_a_minute_losing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds = _seconds()
    setup_started = time.monotonic()
    plan = _plan()
    checkpoint_create()  # verify then proves the run's growth consistent with this one
    before = Entry.objects.count()
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    env = subprocess_env(DATABASE_URL=_test_database_url())
    env.pop("DATABASE_URL_FILE", None)
    go = tmp_path / "go"
    procs = [_client(env, str(plan_file), str(i), str(seconds), str(go)) for i in range(CLIENTS)]
    try:
        for proc in procs:  # every process has set Django up and polls for the signal
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", (line, proc.stderr.read() if proc.stderr else "")
        setup_s = time.monotonic() - setup_started
        go.touch()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=seconds + 300)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    errors = {r["client"]: (r["errors"], r["error_samples"]) for r in reports if r["errors"]}
    assert not errors  # no lock error, no deadlock, no refusal but a lost race
    assert all(r["late_s"] < 2.0 for r in reports), [r["late_s"] for r in reports]  # they really ran together
    conflicts: Counter[str] = Counter()
    for report in reports:
        conflicts.update(report["conflicts"])
    assert set(conflicts) <= set(ALLOWED_CONFLICTS)

    # Gapless, and every entry of the run is one operation a client saw succeed, exactly once.
    entries = list(Entry.objects.order_by("index").values_list("index", "body", "actor_id"))
    assert [index for index, _, _ in entries] == list(range(len(entries)))
    found: dict[tuple[int, str], list[int]] = defaultdict(list)
    by_tag: dict[str, int] = {}
    for index, body, actor_id in entries[before:]:
        document = json.loads(bytes(body))
        assert document["action"] in ACTIONS, (index, document["action"])  # nothing unexpected was written
        kind, field = ACTIONS[document["action"]]
        text = document["payload"][field]
        parsed = parse_tag(text)
        assert parsed is not None, (index, text)
        client, op = parsed
        assert actor_id == str(reports[client]["user_id"]), (index, actor_id)
        found[(client, kind)].append(op)
        by_tag[text] = index
    for report in reports:
        for kind, ops in report["ok"].items():
            assert found.get((report["client"], kind), []) == ops, (report["client"], kind)  # none lost, none twice
    successes = sum(len(ops) for r in reports for ops in r["ok"].values())
    assert len(entries) - before == successes

    # Quorum: never more approvals than the rule asks, exactly its quorum once approved.
    states: Counter[str] = Counter()
    for request in ApprovalRequest.objects.prefetch_related("decisions"):
        slots = {slot["role"]: slot["count"] for slot in request.rule["approvals"]}
        decisions = list(request.decisions.all())
        approvals = Counter(d.role for d in decisions if d.decision == "approve")
        rejections = [d for d in decisions if d.decision == "reject"]
        assert set(approvals) <= set(slots) and all(n <= slots[role] for role, n in approvals.items()), request.pk
        assert len({d.approver_id for d in decisions}) == len(decisions)
        if request.state == ApprovalState.APPROVED:
            assert approvals == Counter(slots) and not rejections, request.pk
        elif request.state == ApprovalState.REJECTED:
            assert len(rejections) == 1, request.pk
        else:
            assert request.state == ApprovalState.PENDING and not rejections and approvals != Counter(slots)
        for decision in decisions:  # each decision row points at its own entry
            assert by_tag.get(decision.reason, decision.ledger_index) == decision.ledger_index
        states[request.state] += 1
    quorum_of_two = ApprovalRequest.objects.filter(state=ApprovalState.APPROVED, context__risk_tier="high").count()
    assert quorum_of_two and states[ApprovalState.REJECTED], states  # both rules were decided, both ways
    assert conflicts["slot_filled"] + conflicts["request_closed"] > 0  # the races happened

    assert checkpoint_create() is not None
    verify = io.StringIO()
    call_command("ledger", "verify", stdout=verify)
    assert verify.getvalue().startswith(f"OK {len(entries)} entries"), verify.getvalue()

    by_kind = {kind: sum(len(r["ok"][kind]) for r in reports) for kind in ("append", "submit", "approve", "reject")}
    attempts = sum(r["attempts"] for r in reports)
    with capsys.disabled():
        print(
            f"\n[concurrency] {connection.vendor}: {CLIENTS} client processes for {seconds:.0f} s: "
            f"{successes / seconds:.1f} successful operations/s ({attempts / seconds:.1f} attempted/s); "
            f"{json.dumps(by_kind)}; conflicts {json.dumps(dict(conflicts))}; requests {json.dumps(dict(states))}; "
            f"{len(entries)} entries; setup {setup_s:.1f} s"
        )
