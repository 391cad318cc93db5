"""python -m bench.scale: the approval API on PostgreSQL + Redis as web and worker processes grow.

Scale mode, as a deployment runs it: gunicorn web workers and Celery worker processes on a
PostgreSQL database and a Redis broker (and Redis rate-limit counters). With ``DATABASE_URL``
pointing at PostgreSQL (and ``CELERY_BROKER_URL`` at Redis) their servers are used; otherwise
``bin/scale-services start`` starts a throwaway pair on loopback, and the run stops them again
unless they were already running. Either way the run works in a database of its own, made fresh
on that server and dropped at the end (``<name>_bench_scale``), and in Redis databases 12-14, so
it never touches the data or the queues of a test run that shares the servers.

Setup, through the services: one project, ``BENCH_CLIENTS`` (default 16) pairs of an ML engineer
and a data steward, each with an API token and one scanned dataset version of its own. Then for
1, 2, 3 and 4 web workers (one more Celery worker joins at each step, so N web and N worker
processes), each client thread, after a few reads that warm every web worker, runs the approval
cycle through the API for ``BENCH_STEP_SECONDS`` (default 25): ``POST
/api/v1/dataset-versions/{id}/submit`` as its engineer, then ``POST /api/v1/approvals/{id}/approve``
as its steward, which closes the request, so the next cycle can ask again. Prints one JSON object:
per step, approval cycles per second, HTTP requests per second, p50/p99 latency of each call and
of all, statuses, and how busy the machine's CPUs were.

The load generator is in-house (threads on keep-alive ``http.client`` connections; each cycle's
second call needs the first one's answer): Locust is not in the lock. The approval path
dispatches no Celery job, so the workers stand by as they would in a deployment; their cost is
the memory and the broker polling, not work.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STEPS = (1, 2, 3, 4)
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "25"))
WARM_UP_READS = 5
REDIS_DBS = (12, 13, 14)  # broker, results, rate-limit counters: none a test run uses
ACTION = "dataset_version.use_for_training"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _servers() -> tuple[str, str, bool]:
    """The PostgreSQL URL and the Redis URL to use, and whether this run started them."""
    database = os.environ.get("DATABASE_URL", "")
    if database.startswith(("postgres://", "postgresql://")):
        broker = os.environ.get("CELERY_BROKER_URL", "")
        if not broker.startswith("redis://"):
            sys.exit("bench.scale: DATABASE_URL is PostgreSQL but CELERY_BROKER_URL is not redis://...")
        return database, broker, False
    ports = (int(os.environ.get("SCALE_PG_PORT", "54329")), int(os.environ.get("SCALE_REDIS_PORT", "63799")))
    running = all(_listening(port) for port in ports)
    out = subprocess.run([ROOT / "bin" / "scale-services", "start"], capture_output=True, text=True, check=True)
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    return exported["DATABASE_URL"], exported["CELERY_BROKER_URL"], not running


def _fresh_database(server_url: str, suffix: str = "bench_scale") -> str:
    """Make ``<name>_<suffix>`` anew on the server of ``server_url``; returns its URL."""
    import psycopg

    parts = urlsplit(server_url)
    name = f"{parts.path.lstrip('/') or 'governance'}_{suffix}"
    with psycopg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password,
        dbname="postgres", autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password,
        dbname="postgres", autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def _redis_url(broker: str, db: int) -> str:
    return urlunsplit(urlsplit(broker)._replace(path=f"/{db}"))


def _flush_redis(broker: str) -> None:
    import redis

    for db in REDIS_DBS:
        redis.Redis.from_url(_redis_url(broker, db)).flushdb()


def _setup() -> list[dict[str, Any]]:
    """The clients: each an engineer's and a steward's token and a scanned dataset version."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import override_settings

    from governance.roles import Role
    from governance.services import api_token_create, project_create, project_role_grant
    from registry.models import PiiScan
    from registry.services import dataset_create, dataset_version_upload, pii_scan_run

    call_command("ledger", "keygen", stdout=io.StringIO())
    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    system = users.get(username="system")
    project = project_create(actor=system, slug="bench", name="Bench")
    pairs = []
    for i in range(CLIENTS):
        engineer = users.create_user(username=f"bench-engineer-{i}")
        steward = users.create_user(username=f"bench-steward-{i}")
        project_role_grant(actor=system, project=project, user=engineer, role=Role.ML_ENGINEER, reason="benchmark")
        project_role_grant(actor=system, project=project, user=steward, role=Role.DATA_STEWARD, reason="benchmark")
        pairs.append((engineer, steward))
    owner = pairs[0][1]
    dataset = dataset_create(
        actor=owner, project=project, slug="d", name="D", purpose="benchmark", lawful_basis="contract",
        retention_days=1, source="generated", data_steward=owner,
    )  # fmt: skip
    clients = []
    with override_settings(PII_NLP_MODEL="blank", PII_ENTITIES=["EMAIL_ADDRESS"], PII_SCAN_PROCESSES=1):
        for i, (engineer, steward) in enumerate(pairs):
            version, _ = dataset_version_upload(
                actor=engineer, dataset=dataset, filename="t.jsonl", data=f'{{"t": "record {i}"}}\n'.encode()
            )
            pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=system)
            clients.append({
                "version": version.pk,
                "engineer": api_token_create(actor=system, user=engineer, name="bench")[1],
                "steward": api_token_create(actor=system, user=steward, name="bench")[1],
            })  # fmt: skip
    return clients


def _start_worker(env: dict[str, str], hostname: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "celery"), "-A", "config.celery", "worker", "--loglevel", "WARNING", "--pool", "prefork",
             "--concurrency", "1", "--queues", "default,cpu", "--hostname", hostname],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_for_workers(hostnames: list[str], procs: list[subprocess.Popen[bytes]]) -> None:
    from config.celery import app

    deadline = time.monotonic() + 120
    while True:
        if any(proc.poll() is not None for proc in procs):
            sys.exit("bench.scale: a Celery worker exited; see its log in the run's var/")
        answered = {name for reply in app.control.ping(destination=hostnames, timeout=1.0) for name in reply}
        if answered >= set(hostnames):
            return
        if time.monotonic() > deadline:
            sys.exit(f"bench.scale: Celery workers {sorted(set(hostnames) - answered)} did not answer in 120 s")


def _wait_for_port(port: int, web: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if web.poll() is not None:
            sys.exit(f"bench.scale: gunicorn exited with {web.returncode}")
        if _listening(port):
            return
        time.sleep(0.2)
    sys.exit("bench.scale: gunicorn did not listen within 60 s")


def _percentile(sorted_values: list[float], share: float) -> float:
    return round(sorted_values[max(int(len(sorted_values) * share) - 1, 0)] * 1000, 1)


def _tree_cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds spent so far by these processes and their children (the web or worker pool)."""
    import psutil

    total = 0.0
    for proc in procs:
        try:
            parent = psutil.Process(proc.pid)
            for member in (parent, *parent.children(recursive=True)):
                total += sum(member.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def _step(port: int, clients: list[dict[str, Any]], web: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Every client runs approval cycles for STEP_SECONDS; returns the step's figures."""
    import psutil

    latencies: dict[str, list[float]] = {"submit": [], "approve": []}
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    warmed = threading.Barrier(len(clients) + 1)
    go = threading.Barrier(len(clients) + 1)
    stop_at: list[float] = []

    def call(conn: http.client.HTTPConnection, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any, float]:
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body), headers={
            "Authorization": f"Token {token}", "Content-Type": "application/json",
        })  # fmt: skip
        response = conn.getresponse()
        payload = response.read()
        return response.status, payload, time.perf_counter() - started

    def client(mine: dict[str, Any]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(WARM_UP_READS):  # every web worker serves some before the clock starts
            conn.request("GET", "/api/v1/me", headers={"Authorization": f"Token {mine['steward']}"})
            conn.getresponse().read()
        warmed.wait()
        go.wait()
        submit_path = f"/api/v1/dataset-versions/{mine['version']}/submit"
        while time.monotonic() < stop_at[0]:
            status, payload, elapsed = call(conn, submit_path, mine["engineer"], {"action": ACTION, "comment": "bench"})
            seen = [("submit", status, elapsed)]
            if status == 201:
                request_id = json.loads(payload)["id"]
                status, _, elapsed = call(
                    conn, f"/api/v1/approvals/{request_id}/approve", mine["steward"], {"reason": "benchmark decision"}
                )
                seen.append(("approve", status, elapsed))
            with lock:
                for kind, code, took in seen:
                    latencies[kind].append(took)
                    statuses[f"{kind} {code}"] = statuses.get(f"{kind} {code}", 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(mine,)) for mine in clients]
    for thread in threads:
        thread.start()
    warmed.wait()
    load_1m = os.getloadavg()[0]
    cpu_before, web_before, own_before = psutil.cpu_times(), _tree_cpu([web]), sum(os.times()[:2])
    stop_at.append(time.monotonic() + STEP_SECONDS)
    started = time.perf_counter()
    go.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu_after, web_cpu, own_cpu = psutil.cpu_times(), _tree_cpu([web]) - web_before, sum(os.times()[:2]) - own_before
    busy = sum(cpu_after) - sum(cpu_before) - (cpu_after.idle - cpu_before.idle)
    busy -= getattr(cpu_after, "iowait", 0) - getattr(cpu_before, "iowait", 0)
    everything = sorted(latencies["submit"] + latencies["approve"])
    approvals = sorted(latencies["approve"])
    submits = sorted(latencies["submit"])
    cycles = statuses.get("approve 200", 0)
    return {
        "approval_cycles_per_s": round(cycles / wall, 1),
        "http_requests_per_s": round(len(everything) / wall, 1),
        "latency_ms_p50": round(statistics.median(everything) * 1000, 1),
        "latency_ms_p99": _percentile(everything, 0.99),
        "submit_ms_p50": round(statistics.median(submits) * 1000, 1),
        "submit_ms_p99": _percentile(submits, 0.99),
        "approve_ms_p50": round(statistics.median(approvals) * 1000, 1) if approvals else None,
        "approve_ms_p99": _percentile(approvals, 0.99) if approvals else None,
        "statuses": dict(sorted(statuses.items())),
        "web_cpu_ms_per_cycle": round(web_cpu / cycles * 1000, 1) if cycles else None,
        "client_cpu_ms_per_cycle": round(own_cpu / cycles * 1000, 1) if cycles else None,
        # The whole machine, this run and anything else on it: load from other work shows here.
        "machine_cpu_busy_pct": round(busy / (sum(cpu_after) - sum(cpu_before)) * 100, 1),
        "load_avg_1m_at_start": round(load_1m, 2),
        "seconds": round(wall, 1),
    }


def main() -> None:
    run_started = time.monotonic()
    server_url, broker, started_servers = _servers()
    var_dir = tempfile.mkdtemp(prefix="gov-bench-scale-")
    database_url = _fresh_database(server_url)
    env = dict(os.environ, GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    env.pop("DATABASE_URL_FILE", None)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=_redis_url(broker, REDIS_DBS[0]),
        CELERY_RESULT_BACKEND=_redis_url(broker, REDIS_DBS[1]),
        CACHE_URL=_redis_url(broker, REDIS_DBS[2]),
    )
    # The per-user limits stay on (their counting in Redis is part of the cost) but never bite.
    env.setdefault("API_RATE_LIMIT_APPROVAL_DECISIONS", "1000000/m")
    env.setdefault("API_RATE_LIMIT_APPROVAL_LIST", "1000000/m")
    os.environ.clear()
    os.environ.update(env)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        import django

        django.setup()
        _flush_redis(broker)
        from django.db import connection

        clients = _setup()
        setup_s = time.monotonic() - run_started
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version'), current_setting('fsync')")
            version, fsync = cursor.fetchone()
        database = f"postgresql {version} (fsync {fsync})"
        connection.close()  # the setup's connection idles through the steps
        steps = []
        hostnames: list[str] = []
        for web_workers in STEPS:
            while len(workers) < web_workers:  # one more Celery worker process at each step
                hostnames.append(f"bench-scale-{len(workers) + 1}@{socket.gethostname()}")
                workers.append(_start_worker(env, hostnames[-1], Path(var_dir) / f"worker-{len(workers) + 1}.log"))
            port = _free_port()
            web = subprocess.Popen(
                [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(web_workers), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                _wait_for_port(port, web)
                _wait_for_workers(hostnames, workers)
                steps.append({"web_workers": web_workers, "celery_workers": len(workers), **_step(port, clients, web)})
            finally:
                web.terminate()
                web.wait(timeout=30)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        _drop_database(database_url)
        _flush_redis(broker)
        if started_servers:
            subprocess.run([ROOT / "bin" / "scale-services", "stop"], check=False)
        shutil.rmtree(var_dir, ignore_errors=True)

    print(json.dumps({
        "clients": CLIENTS,
        "scenario": "submit (engineer) then approve (steward), over HTTP",
        "load_generator": "in-house: client threads, http.client",
        "database": database,
        "broker": "redis (also the rate-limit counters)",
        "cpus": os.cpu_count(),
        "setup_s": round(setup_s, 1),
        "total_s": round(time.monotonic() - run_started, 1),
        "steps": steps,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
