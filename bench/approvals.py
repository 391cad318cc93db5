"""python -m bench.approvals: approval decisions through the real API under concurrent clients.

Builds a fresh embedded-default service in a temporary var/ (SQLite WAL, synchronous=FULL),
creates one project, 16 data stewards with API tokens and ``BENCH_APPROVALS`` pending requests
(default 640; each on its own scanned dataset version, under the shipped policy: one data-steward
slot), starts gunicorn (``BENCH_WEB_WORKERS``, default 2 as in ``make up``) on a free loopback
port. ``BENCH_CLIENTS`` closed-loop clients (default 16; ``bench.loadgen``: one thread, one
connection per client) each read a few requests first (so every worker has booted and loaded
before the clock starts), then POST ``/api/v1/approvals/{id}/approve`` on their own share of the
requests. Prints one JSON object: decisions per second, latency percentiles and the CPU the server
and the clients spent.
"""

from __future__ import annotations

import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import loadgen

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_READS = 5
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reference_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop: the same work takes longer when the host's
    cores are shared with other tenants, which moves every figure this bench prints."""
    started = time.process_time()
    table: dict[int, str] = {}
    for i in range(1_000_000):
        table[i & 1023] = str(i)
    return round((time.process_time() - started) * 1000, 1)


def main() -> None:
    total = int(os.environ.get("BENCH_APPROVALS", "640"))
    var_dir = tempfile.mkdtemp(prefix="gov-bench-approvals-")
    env = dict(os.environ, GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    # The per-user limits stay on (their counting is part of the cost measured) but never bite:
    # each client makes BENCH_APPROVALS / BENCH_CLIENTS decisions as fast as it can.
    env.setdefault("API_RATE_LIMIT_APPROVAL_DECISIONS", "1000000/m")
    env.setdefault("API_RATE_LIMIT_APPROVAL_LIST", "1000000/m")
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import override_settings

    from governance.roles import Role
    from governance.services import api_token_create, approval_request_submit, project_create, project_role_grant
    from registry.models import PiiScan
    from registry.services import dataset_create, dataset_version_upload, pii_scan_run

    call_command("ledger", "keygen", stdout=io.StringIO())
    call_command("migrate", verbosity=0)
    User = get_user_model()
    system = User.objects.get(username="system")
    project = project_create(actor=system, slug="bench", name="Bench")
    requester = User.objects.create_user(username="bench-requester")
    project_role_grant(actor=system, project=project, user=requester, role=Role.ML_ENGINEER, reason="benchmark")
    stewards = []
    for i in range(CLIENTS):
        user = User.objects.create_user(username=f"bench-steward-{i}")
        project_role_grant(actor=system, project=project, user=user, role=Role.DATA_STEWARD, reason="benchmark")
        stewards.append(api_token_create(actor=system, user=user, name="bench")[1])
    dataset = dataset_create(
        actor=stewards and User.objects.get(username="bench-steward-0"), project=project, slug="d", name="D",
        purpose="benchmark", lawful_basis="contract", retention_days=1, source="generated",
        data_steward=User.objects.get(username="bench-steward-0"),
    )  # fmt: skip
    requests = []
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        for i in range(total):
            version, _ = dataset_version_upload(
                actor=requester, dataset=dataset, filename="t.jsonl", data=f'{{"t": "record {i}"}}\n'.encode()
            )
            pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=system)
            requests.append(
                approval_request_submit(
                    actor=requester, subject_type="dataset_version", subject_id=str(version.pk),
                    action="dataset_version.use_for_training",
                ).pk
            )  # fmt: skip

    port = _free_port()
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", os.environ.get("BENCH_WEB_WORKERS", "2"), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        import psutil

        def headers(token: str, **more: str) -> dict[str, str]:
            return {"Authorization": f"Token {token}", **more}

        body = json.dumps({"reason": "benchmark decision"}).encode()
        shares = [requests[i::CLIENTS] for i in range(CLIENTS)]
        # Every worker serves some requests before the clock starts (boot, first queries).
        warm_up = [
            [loadgen.request("GET", f"/api/v1/approvals/{pk}", headers(token)) for pk in mine[:WARM_UP_READS]]
            for token, mine in zip(stewards, shares, strict=True)
        ]
        decisions = [
            [loadgen.request("POST", f"/api/v1/approvals/{pk}/approve",
                             headers(token, **{"Content-Type": "application/json"}), body) for pk in mine]
            for token, mine in zip(stewards, shares, strict=True)
        ]  # fmt: skip
        loadgen.run(port, warm_up)
        _reference_ms()  # the first pass also grows the process's heap: not counted
        reference_before = _reference_ms()
        server = [psutil.Process(web.pid), *psutil.Process(web.pid).children()]
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in server)
        own_before = sum(os.times()[:2])
        results, wall = loadgen.run(port, decisions)
        server_cpu = sum(sum(p.cpu_times()[:2]) for p in server) - cpu_before
        client_cpu = sum(os.times()[:2]) - own_before
        reference_after = _reference_ms()
        latencies = sorted(seconds for mine in results for _, seconds in mine)
        statuses = Counter(status for mine in results for status, _ in mine)
    finally:
        web.terminate()
        web.wait(timeout=30)

    print(json.dumps({
        "clients": CLIENTS,
        "decisions": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "decisions_per_s": round(len(latencies) / wall, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "latency_ms_max": round(latencies[-1] * 1000, 1),
        "server_cpu_ms_per_decision": round(server_cpu / len(latencies) * 1000, 1),
        "client_cpu_ms_per_decision": round(client_cpu / len(latencies) * 1000, 1),
        "web_workers": int(os.environ.get("BENCH_WEB_WORKERS", "2")),
        "machine_reference_ms": [reference_before, reference_after],
        "database": f"sqlite (WAL, synchronous={env.get('SQLITE_SYNCHRONOUS', 'FULL').upper()})",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
