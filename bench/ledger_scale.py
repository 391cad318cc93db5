"""python -m bench.ledger_scale: governed appends to the ledger on PostgreSQL from concurrent writers.

Scale mode with a durable database: a throwaway PostgreSQL cluster that ``bin/scale-services``
starts with ``SCALE_PG_FSYNC=on`` (fsync and synchronous_commit on) under ``/tmp/llmops-bench-ledger``
on port 54339 (``BENCH_LEDGER_PG_PORT``), stopped at the end; the run works in a database made fresh
for each configuration. Each writer is a process of its own, as web and worker processes are, and
commits one entry per transaction through ``ledger_append`` (the call every governed service makes).

Side by side, for 1, 4 and 16 writers (``BENCH_LEDGER_WRITERS``), each step ``BENCH_LEDGER_STEP_S``
seconds (default 10):

- ``deferred``: the production configuration on PostgreSQL. Writers record entries without a
  shared lock; the integrator (``manage.py ledger integrate --follow``, as each Celery worker
  starts it) adds them to the tree. A monitor reads the tree's size every 5 ms, so each entry's
  integration lag (from its commit to the first reading that covers it) is known.
- ``inline``: what the service did before: each append locks the ledger head in its transaction
  and holds it through the commit's fsync.

Prints one JSON object: per configuration and writer count, entries/s, latency of the append's
transaction (p50, p99, max, ms), integration lag (p50, p99, max, ms; deferred only), errors, and
whether the ledger was gapless and verified (``ledger verify``) at the end of the step.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from bench.scale import ROOT, _drop_database, _fresh_database

WRITERS = [int(n) for n in os.environ.get("BENCH_LEDGER_WRITERS", "1,4,16").split(",")]
STEP_S = float(os.environ.get("BENCH_LEDGER_STEP_S", "10"))
PG_PORT = int(os.environ.get("BENCH_LEDGER_PG_PORT", "54339"))
SCALE_DIR = "/tmp/llmops-bench-ledger"  # noqa: S108 (a throwaway cluster, as bin/scale-services makes)


def _services(action: str) -> dict[str, str]:
    env = dict(os.environ, SCALE_DIR=SCALE_DIR, SCALE_PG_PORT=str(PG_PORT), SCALE_REDIS_PORT=str(PG_PORT + 1),
               SCALE_PG_FSYNC="on")  # fmt: skip
    out = subprocess.run([ROOT / "bin" / "scale-services", action], env=env, capture_output=True, text=True, check=True)
    return dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def _writer(worker: int, seconds: float, ready: Any, go: Any, results: Any) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from audits.ledger.services import Subject, ledger_append

    connection.close()
    actor = get_user_model().objects.get(username="system")
    payload = {"dataset_version": "sha256:" + "ab" * 32, "decision": "approved", "slots": ["security", "compliance"]}
    committed: list[tuple[int, float]] = []  # (index, monotonic time of the commit)
    latencies: list[float] = []
    errors: list[str] = []
    actor.get_username()  # the connection is open and Django warm before the start
    ready.put(worker)
    go.wait()
    deadline = time.monotonic() + seconds
    while (began := time.monotonic()) < deadline:
        try:
            appended = ledger_append(actor=actor, action="bench.append", subject=Subject("bench", str(worker)),
                                     payload=payload)  # fmt: skip
        except Exception as exc:  # every failure is reported
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        done = time.monotonic()
        committed.append((appended.index, done))
        latencies.append((done - began) * 1000)
    results.put({"committed": committed, "latencies": latencies, "errors": errors[:5], "error_count": len(errors)})


def _monitor(stop: threading.Event, samples: list[tuple[float, int]], database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute("SELECT size FROM ledger_ledgerhead WHERE id = 1").fetchone()
            samples.append((time.monotonic(), int(row[0]) if row else 0))
            time.sleep(0.005)


def _lags(committed: list[tuple[int, float]], samples: list[tuple[float, int]]) -> list[float] | None:
    """Each entry's lag from its commit to the first size reading that covers it (ms)."""
    lags, position = [], 0
    for index, at in sorted(committed):
        while position < len(samples) and samples[position][1] <= index:
            position += 1
        if position == len(samples):
            return None  # never integrated while the monitor watched
        lags.append(max(0.0, samples[position][0] - at) * 1000)
    return lags


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max": round(ordered[-1], 2),
    }


def _step(mode: str, writers: int, server_url: str) -> dict[str, Any]:
    database_url = _fresh_database(server_url, suffix=f"bench_ledger_{mode}_{writers}")
    var_dir = tempfile.mkdtemp(prefix="gov-bench-ledger-scale-")
    env = dict(os.environ, DATABASE_URL=database_url, GOV_VAR_DIR=var_dir, LEDGER_SEQUENCING=mode,
               DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")  # fmt: skip
    os.environ.clear()
    os.environ.update(env)
    manage = [sys.executable, str(ROOT / "manage.py")]
    for args in (["ledger", "keygen"], ["migrate", "--noinput"]):
        subprocess.run([*manage, *args], env=env, check=True, capture_output=True)
    integrator = None
    if mode == "deferred":
        integrator = subprocess.Popen([*manage, "ledger", "integrate", "--follow"], env=env)
    ctx = multiprocessing.get_context("spawn")
    results, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(w, STEP_S, ready, go, results)) for w in range(writers)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every writer has started Django and read its actor
        ready.get(timeout=300)
    go.set()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(stop, samples, database_url))
    monitor.start()
    reports = [results.get(timeout=STEP_S + 120) for _ in procs]
    for proc in procs:
        proc.join()
    time.sleep(1.5)  # the integrator catches up; the monitor sees it
    stop.set()
    monitor.join()
    if integrator is not None:
        integrator.terminate()
        integrator.wait(timeout=30)
    committed = [item for report in reports for item in report["committed"]]
    latencies = [value for report in reports for value in report["latencies"]]
    lags = _lags(committed, samples) if mode == "deferred" else None
    verify = subprocess.run([*manage, "ledger", "verify"], env=env, capture_output=True, text=True)
    import psycopg

    with psycopg.connect(database_url) as conn:
        indexes = [row[0] for row in conn.execute('SELECT "index" FROM ledger_entry ORDER BY "index"')]
    _drop_database(database_url)
    return {
        "entries": len(committed),
        "entries_per_s": round(len(committed) / STEP_S),
        "append_ms": _ms(latencies),
        "integration_lag_ms": _ms(lags) if lags else None,
        "errors": sum(report["error_count"] for report in reports),
        "error_samples": [e for report in reports for e in report["errors"]][:3],
        "gapless": indexes == list(range(len(indexes))),
        "verified": verify.returncode == 0,
    }


def main() -> None:
    started_here = not _listening(PG_PORT)
    server = _services("start")["DATABASE_URL"]
    figures: dict[str, Any] = {"database": "postgresql, fsync and synchronous_commit on", "step_s": STEP_S}
    saved = dict(os.environ)
    try:
        for mode in ("deferred", "inline"):
            figures[mode] = {}
            for writers in WRITERS:
                figures[mode][str(writers)] = _step(mode, writers, server)
                os.environ.clear()
                os.environ.update(saved)
    finally:
        if started_here:
            _services("stop")
    deferred = figures["deferred"]
    rates = [deferred[str(w)]["entries_per_s"] for w in WRITERS]
    figures["deferred_rises_with_writers"] = all(b > a for a, b in itertools.pairwise(rates))
    figures["deferred_over_inline_at_most_writers"] = round(
        deferred[str(WRITERS[-1])]["entries_per_s"] / max(1, figures["inline"][str(WRITERS[-1])]["entries_per_s"]), 2
    )
    print(json.dumps(figures))


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
