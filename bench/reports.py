"""python -m bench.reports: seconds to generate and sign the Art. 30 records of processing.

Builds a fresh embedded-default service in a temporary var/ (SQLite WAL): ``BENCH_DATASETS``
datasets (default 10,000) registered through ``dataset_create`` (each a ledger entry), each with
one version and a finished PII scan holding findings (bulk-inserted: the registry's upload path
would scan 10,000 files first, which is not what this measures), then fills the ledger to
``BENCH_LEDGER_SIZE`` entries (default 1,000,000) in batches. Then it asks for an
organisation-wide ``records_of_processing`` report and runs the worker's step in-process: sign a
checkpoint, read the inventory, lay out the PDF, sign it (PAdES), store it and record its digest.
Prints one JSON object; ``report_s`` is that step's wall time, the target is 30 s.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time


def main() -> None:
    datasets = int(os.environ.get("BENCH_DATASETS", "10000"))
    ledger_size = int(os.environ.get("BENCH_LEDGER_SIZE", "1000000"))
    var_dir = tempfile.mkdtemp(prefix="gov-bench-reports-")
    os.environ.update(GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING")
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    import django

    django.setup()
    import datetime as dt

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from audits.ledger.selectors import tree_size
    from audits.ledger.services import Actor, AppendRequest, Subject, ledger_append_many
    from audits.reports.services import report_generate, report_request, report_verify
    from governance.services import project_create
    from registry.models import DatasetVersion, PiiScan
    from registry.services import dataset_create

    call_command("ledger", "keygen", stdout=io.StringIO())
    call_command("migrate", verbosity=0)
    system = get_user_model().objects.get(username="system")
    started = time.perf_counter()
    projects = [project_create(actor=system, slug=f"team-{i}", name=f"Team {i}") for i in range(10)]
    made = []
    for i in range(datasets):
        with transaction.atomic():
            made.append(dataset_create(
                actor=system, project=projects[i % len(projects)], slug=f"d{i}", name=f"Dataset {i}",
                purpose=f"fine-tuning the support assistant on conversation set {i}", lawful_basis="contract",
                retention_days=365, source="support tickets export", data_steward=system,
                data_subject_categories=["customers"], recipients=["model hosting provider"],
                third_country_transfers=["US: standard contractual clauses"] if i % 5 == 0 else [],
            ))  # fmt: skip
    now = timezone.now()
    versions = DatasetVersion.objects.bulk_create(
        DatasetVersion(dataset=d, number=1, sha256=f"{d.pk:064x}", size_bytes=1000, format="jsonl",
                       original_name="t.jsonl", record_count=100, duplicate_count=0, pii_verdict="found",
                       created_by=system)
        for d in made
    )  # fmt: skip
    PiiScan.objects.bulk_create(
        PiiScan(version=v, status="succeeded", started_at=now, finished_at=now, records_scanned=100,
                findings={"EMAIL_ADDRESS": {"count": 3, "records": 3, "samples": []},
                          "PHONE_NUMBER": {"count": 1, "records": 1, "samples": []}})
        for v in versions
    )  # fmt: skip
    inventory_s = time.perf_counter() - started

    started = time.perf_counter()
    actor = Actor.of(system)
    while (current := tree_size()) < ledger_size:
        batch = min(5000, ledger_size - current)
        ledger_append_many(
            [AppendRequest(actor, "bench.fill", Subject("bench", str(current + i)), {"n": current + i})
             for i in range(batch)]
        )  # fmt: skip
    fill_s = time.perf_counter() - started

    today = dt.date.today()
    run = report_request(actor=system, kind="records_of_processing", period_start=today.replace(day=1),
                         period_end=today)  # fmt: skip
    started = time.perf_counter()
    done = report_generate(report_pk=run.pk)
    report_s = time.perf_counter() - started
    assert done is not None and done.state == "done", done.error if done else "not claimed"
    from common import artifacts

    pdf = artifacts.open_blob(done.pdf_sha256).read_bytes()
    started = time.perf_counter()
    check = report_verify(pdf)
    verify_s = time.perf_counter() - started
    print(json.dumps({
        "datasets": datasets, "ledger_entries": tree_size(), "report_s": round(report_s, 2), "target_s": 30,
        "pdf_bytes": len(pdf), "verify_s": round(verify_s, 2), "verified": check.ok,
        "setup_inventory_s": round(inventory_s, 1), "setup_ledger_fill_s": round(fill_s, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
