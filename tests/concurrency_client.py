"""One client of the concurrency test (tests/test_concurrency.py):
``python -m tests.concurrency_client PLAN CLIENT SECONDS GO``.

Sets Django up on the database in ``DATABASE_URL``, prints ``ready``, waits until the file GO
exists, then for SECONDS works as one person would at full speed, through the services: appends
plain ledger entries, submits approval requests on its own dataset versions (again once the
previous request on a version is closed), and approves or rejects requests from its inbox, picking
among the oldest few so that several clients often race for the same slot. Every operation
carries its tag (``client-C/op-N``: the entry's payload for an append, the comment of a request,
the reason of a decision), so the test can find each one in the ledger. Prints one JSON line: the
operations that succeeded by kind, the domain conflicts met, and every other error by type.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Refusals that a race for the same request legitimately ends in; any other failure is an error.
ALLOWED_CONFLICTS = ("slot_filled", "request_closed")
APPEND_SHARE = 0.35
SUBMIT_SHARE = 0.2
REJECT_SHARE = 0.15
INBOX_WINDOW = 4  # decide among the oldest few pending requests: contention on purpose
ACTION = "dataset_version.use_for_training"
MAX_ERROR_SAMPLES = 5


def tag(client: int, op: int) -> str:
    return f"client-{client}/op-{op}"


def parse_tag(text: str) -> tuple[int, int] | None:
    if not text.startswith("client-") or "/op-" not in text:
        return None
    client, op = text.removeprefix("client-").split("/op-", 1)
    return int(client), int(op)


def run(plan: dict[str, Any], client: int, seconds: float, go: Path) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from audits.ledger.services import Subject, ledger_append
    from common.errors import DomainError
    from governance.models import ApprovalRequest, ApprovalState
    from governance.services import approval_request_decide, approval_request_submit

    mine = plan["clients"][client]
    user = get_user_model().objects.get(username=mine["username"])
    # version -> the request last made on it (None: free); the setup made one on each
    open_requests: dict[int, int | None] = {int(v): r for v, r in mine["requests"].items()}
    risk = {int(v): tier for v, tier in mine["risk"].items()}
    rng = random.Random(client)  # noqa: S311 (a load mix, not a secret)
    ok: dict[str, list[int]] = {"append": [], "submit": [], "approve": [], "reject": []}
    conflicts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    samples: list[str] = []

    # What ``approval_list(inbox=True)`` answers, in one query: the selector (several queries and
    # a pass over every pending request) would make the clients spend their time reading.
    inbox_query = (
        ApprovalRequest.objects.filter(state=ApprovalState.PENDING, project__slug=plan["project"])
        .exclude(requester=user)
        .exclude(decisions__approver=user)
        .order_by("pk")
    )
    if not mine["steward"]:  # a compliance officer holds a slot only in the high-risk rule
        inbox_query = inbox_query.filter(context__risk_tier="high")

    def free_versions() -> list[int]:
        pending = set(
            ApprovalRequest.objects.filter(
                pk__in=[r for r in open_requests.values() if r is not None], state=ApprovalState.PENDING
            ).values_list("pk", flat=True)
        )
        return [v for v, r in open_requests.items() if r is None or r not in pending]

    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    late_s = time.time() - go.stat().st_mtime
    started = time.monotonic()
    deadline = started + seconds
    op = 0
    while time.monotonic() < deadline:
        label = tag(client, op)
        kind = "append"
        try:
            roll = rng.random()
            if roll >= APPEND_SHARE:
                inbox = list(inbox_query.values_list("pk", flat=True)[:INBOX_WINDOW])
                free = free_versions() if roll < APPEND_SHARE + SUBMIT_SHARE or not inbox else []
                if free:
                    kind = "submit"
                elif inbox:
                    kind = "reject" if rng.random() < REJECT_SHARE else "approve"
            if kind == "append":
                ledger_append(
                    actor=user, action="load.append", subject=Subject(type="client", id=str(client)),
                    payload={"tag": label},
                )  # fmt: skip
            elif kind == "submit":
                version = rng.choice(free)
                context = {"risk_tier": "high"} if risk[version] == "high" else {}
                request = approval_request_submit(
                    actor=user, subject_type="dataset_version", subject_id=str(version), action=ACTION,
                    context=context, comment=label,
                )  # fmt: skip
                open_requests[version] = request.pk
            else:
                target = rng.choice(inbox)
                approval_request_decide(actor=user, request_id=target, decision=kind, reason=label)
            ok[kind].append(op)
        except DomainError as exc:
            if exc.code in ALLOWED_CONFLICTS:
                conflicts[exc.code] += 1
            else:
                errors[f"DomainError:{exc.code}"] += 1
                if len(samples) < MAX_ERROR_SAMPLES:
                    samples.append(f"{label} {kind}: {exc.code}: {exc.message}")
        except Exception as exc:  # a lock error, a deadlock, anything: the test fails on it
            errors[type(exc).__name__] += 1
            if len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"{label} {kind}: {type(exc).__name__}: {exc}")
        op += 1
    return {
        "client": client, "user_id": user.pk, "attempts": op, "ok": ok, "conflicts": dict(conflicts),
        "errors": dict(errors), "error_samples": samples, "late_s": round(late_s, 3),
        "elapsed_s": round(time.monotonic() - started, 3),
    }  # fmt: skip


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    plan = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(plan, int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))))


if __name__ == "__main__":
    main()
