"""python -m bench.ledger: append rate, full verification time and proof cost of the ledger.

Runs on the embedded default (SQLite, WAL, ``SQLITE_SYNCHRONOUS=FULL``: every commit is fsynced)
in a fresh temporary var/; set ``SQLITE_SYNCHRONOUS=NORMAL`` to measure that mode. Prints one JSON
object. ``BENCH_LEDGER_SIZE`` sets the tree size for the verification and proof figures (default
1,000,000); ``BENCH_LEDGER_RATE_S`` the seconds each append-rate measurement runs (default 10).
The full verification runs as configured (``LEDGER_VERIFY_PROCESSES``: the log replayed in
segments by that many processes, by default one per core) and in one process, in turns,
``BENCH_LEDGER_VERIFY_TURNS`` times each (default 3): ``verify_s`` and ``verify_one_process_s`` are
the medians. After it, 10,000 entries
are appended and checkpointed and verified incrementally (``ledger verify --incremental``):
``incremental_verify_s``. Concurrent writers on PostgreSQL: ``bench.ledger_scale``.
"""

from __future__ import annotations

import io
import json
import os
import random
import statistics
import tempfile
import time


def main() -> None:
    size = int(os.environ.get("BENCH_LEDGER_SIZE", "1000000"))
    rate_seconds = float(os.environ.get("BENCH_LEDGER_RATE_S", "10"))
    var_dir = tempfile.mkdtemp(prefix="gov-bench-ledger-")
    os.environ.update(GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings

    from audits.ledger import merkle
    from audits.ledger.selectors import consistency_proof_with_roots, inclusion_proof_with_root, tree_size
    from audits.ledger.services import Actor, AppendRequest, Subject, checkpoint_create, ledger_append_many
    from audits.ledger.verification import ledger_verify

    call_command("ledger", "keygen", stdout=io.StringIO())
    call_command("migrate", verbosity=0)
    actor = Actor.of(get_user_model().objects.get(username="system"))
    payload = {"dataset_version": "sha256:" + "ab" * 32, "decision": "approved", "slots": ["security", "compliance"]}

    def requests(n: int) -> list[AppendRequest]:
        return [AppendRequest(actor, "bench.append", Subject("bench", str(i)), payload) for i in range(n)]

    def rate(batch: int) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < rate_seconds:
            ledger_append_many(requests(batch))  # one transaction per call
            done += batch
        return done / (time.perf_counter() - started)

    single, batched = rate(1), rate(100)

    fill_started = time.perf_counter()
    while (current := tree_size()) < size:
        ledger_append_many(requests(min(5000, size - current)))
    fill_s = time.perf_counter() - fill_started
    checkpoint_create()
    size = tree_size()

    # The full verification as it runs (``LEDGER_VERIFY_PROCESSES``, by default every core) and
    # in one process, taking turns: each is reported by its median.
    verify_runs: dict[int, list[float]] = {settings.LEDGER_VERIFY_PROCESSES: [], 1: []}
    for _ in range(int(os.environ.get("BENCH_LEDGER_VERIFY_TURNS", "3"))):
        for processes, runs in verify_runs.items():
            with override_settings(LEDGER_VERIFY_PROCESSES=processes):
                started = time.perf_counter()
                result = ledger_verify()
                runs.append(time.perf_counter() - started)

    # Incremental verification: 10,000 entries appended and checkpointed after the full run.
    ledger_append_many(requests(5000))
    ledger_append_many(requests(5000))
    checkpoint_create()
    started = time.perf_counter()
    incremental = ledger_verify(incremental=True)
    incremental_s = time.perf_counter() - started
    assert incremental.verified_from == size and incremental.tree_size == size + 10_000, incremental

    rng = random.Random(9162)  # noqa: S311 (picks sample indexes, not secrets)
    inclusion_ms, consistency_ms, queries = [], [], []
    for _ in range(300):
        index = rng.randrange(size)
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            leaf, proof, root = inclusion_proof_with_root(index, size)
            inclusion_ms.append((time.perf_counter() - started) * 1000)
        queries.append(len(ctx.captured_queries))
        merkle.verify_inclusion(index, size, leaf, proof, root)
        first = rng.randrange(1, size)
        started = time.perf_counter()
        proof, first_root, second_root = consistency_proof_with_roots(first, size)
        consistency_ms.append((time.perf_counter() - started) * 1000)
        merkle.verify_consistency(first, size, first_root, second_root, proof)

    def p99(values: list[float]) -> float:
        return round(sorted(values)[int(len(values) * 0.99)], 3)

    figures = {
        "database": connection.vendor,
        "sqlite_synchronous": settings.SQLITE_SYNCHRONOUS if connection.vendor == "sqlite" else None,
        "appends_per_s_one_per_transaction": round(single),
        "appends_per_s_100_per_transaction": round(batched),
        "tree_size": result.tree_size,
        "fill_s": round(fill_s, 1),
        "verify_processes": settings.LEDGER_VERIFY_PROCESSES,
        "verify_s": round(statistics.median(verify_runs[settings.LEDGER_VERIFY_PROCESSES]), 2),
        "verify_one_process_s": round(statistics.median(verify_runs[1]), 2),
        "verify_runs_s": {str(p): [round(t, 2) for t in runs] for p, runs in verify_runs.items()},
        "incremental_new_entries": incremental.tree_size - incremental.verified_from,
        "incremental_verify_s": round(incremental_s, 3),
        "inclusion_proof_ms_median": round(statistics.median(inclusion_ms), 3),
        "inclusion_proof_ms_p99": p99(inclusion_ms),
        "inclusion_proof_queries": max(queries),
        "consistency_proof_ms_median": round(statistics.median(consistency_ms), 3),
        "consistency_proof_ms_p99": p99(consistency_ms),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
