"""Processes for the concurrency test of approvals: ``python -m tests.racer setup`` makes
a project, a pending high-risk request (two slots: a data steward and a compliance officer) and 16
approvers, and prints them as JSON; ``python -m tests.racer decide USER REQUEST GO`` sets
Django up, prints ``ready``, waits until the file GO exists, approves, and prints one JSON line with
the outcome.
"""

from __future__ import annotations

import json
import os
import sys
import time


def setup() -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.test import override_settings

    from governance.roles import Role
    from governance.services import approval_request_submit, project_create, project_role_grant
    from registry.models import PiiScan
    from registry.services import dataset_create, dataset_version_upload, pii_scan_run

    users = get_user_model().objects
    system = users.get(username="system")
    project = project_create(actor=system, slug="race", name="Race")
    requester = users.create_user(username="requester")
    project_role_grant(actor=system, project=project, user=requester, role=Role.ML_ENGINEER, reason="test setup")
    approvers = []
    for i in range(16):
        user = users.create_user(username=f"approver-{i}")
        role = Role.DATA_STEWARD if i % 2 else Role.COMPLIANCE_OFFICER
        project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
        approvers.append(user.username)
    steward = users.get(username="approver-1")
    dataset = dataset_create(
        actor=steward, project=project, slug="d", name="D", purpose="test", lawful_basis="contract",
        retention_days=1, source="generated", data_steward=steward,
    )  # fmt: skip
    version, _ = dataset_version_upload(actor=requester, dataset=dataset, filename="t.jsonl", data=b'{"t": "x"}\n')
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=system)
    request = approval_request_submit(
        actor=requester, subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training", context={"risk_tier": "high"},
    )  # fmt: skip
    return {"request": request.pk, "approvers": approvers}


def decide(username: str, request_id: int, go: str) -> dict[str, object]:
    from pathlib import Path

    from django.contrib.auth import get_user_model

    from common.errors import DomainError
    from governance.services import approval_request_decide

    user = get_user_model().objects.get(username=username)
    print("ready", flush=True)
    signal = Path(go)
    while not signal.exists():
        time.sleep(0.001)
    started = time.time()
    start_at = signal.stat().st_mtime
    try:
        approval_request_decide(actor=user, request_id=request_id, decision="approve", reason="looks right")
        outcome = "ok"
    except DomainError as exc:
        outcome = exc.code
    except Exception as exc:  # a lock error lands here, and the test fails on it
        outcome = f"error: {type(exc).__name__}: {exc}"
    return {"user": username, "outcome": outcome, "late_s": round(started - start_at, 3)}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    if sys.argv[1] == "setup":
        print(json.dumps(setup()))
    else:
        print(json.dumps(decide(sys.argv[2], int(sys.argv[3]), sys.argv[4])))


if __name__ == "__main__":
    main()
