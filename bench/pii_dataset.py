"""python -m bench.pii_dataset: one large JSONL version's PII scan, end to end, on 1 and 2 workers.

Scale mode, as a deployment runs it: Celery worker processes on a PostgreSQL database and a Redis
broker. With ``DATABASE_URL`` pointing at PostgreSQL (and ``CELERY_BROKER_URL`` at Redis) their
servers are used; otherwise ``bin/scale-services start`` starts a throwaway pair on loopback,
stopped again at the end unless it was already running. The run works in a database of its own
(``<name>_bench_pii_dataset``, made fresh and dropped at the end) and in Redis databases 12-14.

Setup, through the services: a JSONL file of ``BENCH_PII_DATASET_RECORDS`` (default 1,000,000)
records from ``bench.pii_corpus`` (support tickets, about 30% holding names, places, e-mail
addresses, phone numbers or IBANs), registered as a dataset version. Then for each worker count
in ``BENCH_PII_WORKERS`` (default ``1,2``): that many Celery workers (``--concurrency 1`` each,
``PII_SCAN_PROCESSES=1``, so workers are the unit of parallelism) are started and answer a ping;
the version's scan is requested (the upload's own scan, then ``pii_scan_request``) and followed to
its end. The scanner is the product's (default ``PII_NLP_MODEL`` and ``PII_ENTITIES``, NER
included), with shards of ``BENCH_PII_SHARD_RECORDS`` records (default: records / 16, at most
the product default 50,000, at least 1,000).

Prints one JSON object: per worker count, wall time from the request to the verdict, records/s
(overall, and from 10% to 90% done), a few progress samples as the API shows them (records done,
rate, time left), and the peak resident memory (VmHWM) of each worker's processes when the scan
passed 10% and at its end; then the scaling factor (records/s of the most workers over that of
one, both ways). The workers load the spaCy pipeline in their first shard: that is inside the
wall time, as it is in a deployment, and outside the 10%-90% figure, which is what a long scan
approaches.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale import (
    REDIS_DBS,
    ROOT,
    _drop_database,
    _flush_redis,
    _fresh_database,
    _redis_url,
    _servers,
    _start_worker,
    _wait_for_workers,
)

RECORDS = int(os.environ.get("BENCH_PII_DATASET_RECORDS", "1000000"))
WORKERS = [int(n) for n in os.environ.get("BENCH_PII_WORKERS", "1,2").split(",")]
SHARD_RECORDS = int(os.environ.get("BENCH_PII_SHARD_RECORDS", "0")) or max(1000, min(50_000, RECORDS // 16))
SAMPLE_EVERY_S = 2.0


def _write_corpus(path: Path) -> int:
    from bench.pii_corpus import iter_labelled

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i, record in enumerate(iter_labelled(RECORDS)):
            out.write(json.dumps({"id": i, "text": record.text}) + "\n")
    return path.stat().st_size


def _setup() -> tuple[Any, Any]:
    """A project, its engineer and steward, and the dataset the version goes into."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from governance.roles import Role
    from governance.services import project_create, project_role_grant
    from registry.services import dataset_create

    call_command("ledger", "keygen", stdout=io.StringIO())
    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    system = users.get(username="system")
    project = project_create(actor=system, slug="bench", name="Bench")
    engineer = users.create_user(username="bench-engineer")
    steward = users.create_user(username="bench-steward")
    project_role_grant(actor=system, project=project, user=engineer, role=Role.ML_ENGINEER, reason="benchmark")
    project_role_grant(actor=system, project=project, user=steward, role=Role.DATA_STEWARD, reason="benchmark")
    dataset = dataset_create(
        actor=steward, project=project, slug="tickets", name="Tickets", purpose="benchmark",
        lawful_basis="contract", retention_days=1, source="bench.pii_corpus", data_steward=steward,
    )  # fmt: skip
    return engineer, dataset


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(child.pid for child in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _hwm_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _peaks(workers: list[subprocess.Popen[bytes]]) -> list[float]:
    """Per worker, the largest peak of its processes (the pool child scans; the parent idles)."""
    return [max((_hwm_mb(pid) for pid in _tree(w.pid)), default=0.0) for w in workers]


def _follow(scan_id: int, workers: list[subprocess.Popen[bytes]], started: float) -> dict[str, Any]:
    from registry.models import PiiScan

    samples: list[dict[str, Any]] = []
    peak_at_10 = None
    while True:
        scan = PiiScan.objects.get(pk=scan_id)
        elapsed = round(time.monotonic() - started, 1)
        if scan.status in ("succeeded", "failed"):
            break
        if any(w.poll() is not None for w in workers):
            raise SystemExit("bench.pii_dataset: a Celery worker exited; see its log in the run's var/")
        if scan.status == "running" and scan.records_total:
            samples.append({
                "t_s": elapsed, "records_done": scan.records_done, "records_total": scan.records_total,
                "rate": scan.rate, "eta_s": scan.eta_s,
            })  # fmt: skip
            if peak_at_10 is None and scan.records_done >= scan.records_total / 10:
                peak_at_10 = _peaks(workers)
        time.sleep(SAMPLE_EVERY_S)
    wall = time.monotonic() - started
    if scan.status != "succeeded":
        raise SystemExit(f"bench.pii_dataset: scan {scan.pk} failed: {scan.error}")
    # Records/s from 10% to 90% done: the workers' model load (in their first shard) left out.
    inner = [x for x in samples if 0.1 <= x["records_done"] / x["records_total"] <= 0.9]
    steady = (
        round((inner[-1]["records_done"] - inner[0]["records_done"]) / (inner[-1]["t_s"] - inner[0]["t_s"]), 1)
        if len(inner) >= 2 and inner[-1]["t_s"] > inner[0]["t_s"]
        else None
    )
    # A few samples across the run, as a reader of the API saw them.
    shown = [samples[round(i * (len(samples) - 1) / 4)] for i in range(5)] if len(samples) >= 5 else samples
    return {
        "wall_s": round(wall, 1),
        "records_per_s": round(scan.records_scanned / wall, 1),
        "records_per_s_10_to_90pct": steady,
        "scan_rate": scan.rate,
        "records_scanned": scan.records_scanned,
        "shards": scan.shard_count,
        "findings": {entity: f["count"] for entity, f in scan.findings.items()},
        "progress_samples": shown,
        "progress_samples_taken": len(samples),
        "peak_rss_mb_at_10pct": peak_at_10,
        "peak_rss_mb_at_end": _peaks(workers),
    }


def _scan_once(count: int, env: dict[str, str], var_dir: str, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    from django.db import connection

    from registry.models import PiiScan
    from registry.services import dataset_version_register_path, pii_scan_request

    hostnames = [f"bench-pii-{count}-{i}@{socket.gethostname()}" for i in range(count)]
    workers = [_start_worker(env, name, Path(var_dir) / f"worker-{name.split('@')[0]}.log") for name in hostnames]
    try:
        _wait_for_workers(hostnames, workers)
        if "version" not in state:  # the upload's own scan is the first run's (sent as it commits)
            version, _ = dataset_version_register_path(
                actor=state["engineer"], dataset=state["dataset"], path=str(path)
            )
            state["version"] = version
            scan = PiiScan.objects.get(version=version)
        else:
            scan = pii_scan_request(actor=state["engineer"], version=state["version"])
        started = time.monotonic()
        result = _follow(scan.pk, workers, started)
        connection.close()
        return {"workers": count, **result}
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def main() -> None:
    run_started = time.monotonic()
    server_url, broker, started_servers = _servers()
    var_dir = tempfile.mkdtemp(prefix="gov-bench-pii-dataset-")
    database_url = _fresh_database(server_url, "bench_pii_dataset")
    env = dict(os.environ, GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    env.pop("DATABASE_URL_FILE", None)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=_redis_url(broker, REDIS_DBS[0]),
        CELERY_RESULT_BACKEND=_redis_url(broker, REDIS_DBS[1]),
        CACHE_URL=_redis_url(broker, REDIS_DBS[2]),
        PII_SCAN_PROCESSES="1",
        PII_SCAN_SHARD_RECORDS=str(SHARD_RECORDS),
        REGISTRY_MAX_UPLOAD_BYTES=str(8 * 2**30),
    )
    os.environ.clear()
    os.environ.update(env)
    runs = []
    try:
        import django

        django.setup()
        _flush_redis(broker)
        from django.conf import settings

        path = Path(var_dir) / "imports" / "tickets.jsonl"
        size = _write_corpus(path)
        engineer, dataset = _setup()
        state: dict[str, Any] = {"engineer": engineer, "dataset": dataset}
        setup_s = time.monotonic() - run_started
        for count in WORKERS:
            runs.append(_scan_once(count, env, var_dir, path, state))
        model, entities = settings.PII_NLP_MODEL, settings.PII_ENTITIES
    finally:
        _drop_database(database_url)
        _flush_redis(broker)
        if started_servers:
            subprocess.run([ROOT / "bin" / "scale-services", "stop"], check=False)
        shutil.rmtree(var_dir, ignore_errors=True)
    one = next((r for r in runs if r["workers"] == 1), None)
    most = max(runs, key=lambda r: r["workers"])
    steady = (one or {}).get("records_per_s_10_to_90pct"), most.get("records_per_s_10_to_90pct")
    print(json.dumps({
        "records": RECORDS,
        "file_mb": round(size / 2**20, 1),
        "shard_records": SHARD_RECORDS,
        "nlp_model": model,
        "entities": entities,
        "processes_per_worker": 1,
        "cpus": os.cpu_count(),
        "setup_s": round(setup_s, 1),
        "total_s": round(time.monotonic() - run_started, 1),
        "runs": runs,
        "scaling": (
            {
                "workers": most["workers"],
                "factor": round(most["records_per_s"] / one["records_per_s"], 2),
                "factor_10_to_90pct": round(steady[1] / steady[0], 2) if all(steady) else None,
            }
            if one is not None and most is not one
            else None
        ),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
