"""Crashes lose nothing and repeat nothing.

A real worker on the real broker is killed with SIGKILL at random points, at least 25 times,
while a stream of report jobs runs through it: afterwards every job is done exactly once (one
``report.generated`` entry per report id), none is stuck, no job is left in the outbox, and
``ledger verify`` passes. And a web process killed between its commit and the dispatch leaves
the job in the outbox, which the relay sends.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import psutil
import pytest
from django.core.management import call_command

from audits.ledger.models import Entry
from audits.reports.models import ReportRun, ReportState
from audits.reports.services import report_request, report_runs_reap
from common.outbox.models import OutboxJob
from common.tasks import outbox_relay
from conftest import ROOT, _test_database_url, start_celery_worker, stop_celery_worker, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
KILLS = 25
JOBS = 30
QUEUE = "faults"


def _request(people: dict[str, Any]) -> ReportRun:
    today = dt.date.today()
    return report_request(actor=people["compliance_officer"], kind="records_of_processing", project=people["project"],
                          period_start=today, period_end=today)  # fmt: skip


def _settle(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ReportRun.objects.filter(state__in=[ReportState.QUEUED, ReportState.RUNNING]).exists():
        assert time.monotonic() < deadline, list(ReportRun.objects.values_list("pk", "state", "claimed_by", "step"))
        outbox_relay(grace_s=5)  # what beat's outbox.relay does
        report_runs_reap(stale_queued_s=20)  # what beat's reports.reap does (with a test-sized period)
        time.sleep(0.5)


def test_a_worker_killed_25_times_mid_job_loses_and_repeats_nothing(people: dict[str, Any], settings: Any) -> None:
    settings.REPORTS_QUEUE = QUEUE
    rng = random.Random(2025)  # noqa: S311 (when to kill, not a secret)
    # On Redis the pool's child is killed: the parent sees it die and requeues the message
    # (reject_on_worker_lost). The embedded broker (kombu's SQLAlchemy transport) does not
    # recover a worker whose child died mid-task (measured: it stops consuming), so there the
    # whole worker is killed and a new one started, as an operator's supervisor would; the
    # messages the dead worker held are lost with it, and the reaper queues their runs again.
    # Two workers share the queue, so one is working while the other restarts.
    whole_worker = settings.CELERY_BROKER_URL.startswith("sqla+")
    log = {"LEDGER_CHECKPOINT_LOG": str(settings.LEDGER_CHECKPOINT_LOG)}  # the checkpoints they sign, for verify
    workers = [start_celery_worker(queues=QUEUE, **log), start_celery_worker(queues=QUEUE, wait=False, **log)]
    kills = 0
    for _ in range(JOBS):  # the stream; topped up below while the kills go on
        _request(people)
    try:
        deadline = time.monotonic() + 420
        while kills < KILLS:
            assert time.monotonic() < deadline, f"only {kills} kills in time"
            while ReportRun.objects.filter(state=ReportState.QUEUED).count() < 3:  # a stream, never dry
                _request(people)
            # Wait for a job in the hands of a worker's live child, then kill it somewhere in
            # the job: claim, build, sign, store, record.
            children = {
                str(child.pid): worker
                for worker in workers if worker.poll() is None
                for child in psutil.Process(worker.pid).children()
            }  # fmt: skip
            running = ReportRun.objects.filter(state=ReportState.RUNNING).values_list("claimed_by", flat=True)
            victims = sorted({claim.rpartition(":")[2] for claim in running} & set(children))
            if not victims:
                report_runs_reap(stale_queued_s=20)
                time.sleep(0.05)
                continue
            time.sleep(rng.uniform(0.0, 0.5))
            victim = rng.choice(victims)
            try:
                os.kill(int(victim), signal.SIGKILL)
            except ProcessLookupError:  # the pool recycled it meanwhile
                continue
            kills += 1
            if whole_worker:
                parent = children[victim]
                parent.kill()
                parent.wait()
                workers[workers.index(parent)] = start_celery_worker(queues=QUEUE, wait=False, **log)
        _settle(timeout=240)
    finally:
        for worker in workers:
            stop_celery_worker(worker)

    runs = list(ReportRun.objects.all())
    assert kills >= KILLS and len(runs) >= JOBS
    assert {r.state for r in runs} == {ReportState.DONE}, Counter(r.state for r in runs)
    generated = Counter(Entry.objects.filter(action="report.generated").values_list("subject_id", flat=True))
    assert generated == Counter({str(r.report_id): 1 for r in runs})  # exactly once, by idempotency key
    assert all(r.ledger_index is not None and r.pdf_sha256 for r in runs)
    assert not OutboxJob.objects.filter(dispatched_at__isnull=True).exists()
    call_command("ledger", "verify")


KILL_AFTER_COMMIT = """
import datetime as dt, json, os, signal, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import transaction
from audits.reports.services import report_request, report_runs_reap
from governance.models import Project

officer = get_user_model().objects.get(username="compliance-officer")
with transaction.atomic():
    # Registered first, so it runs first once the transaction commits: before the outbox sends.
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    run = report_request(actor=officer, kind="records_of_processing", project=Project.objects.get(slug="assistant"),
                         period_start=dt.date.today(), period_end=dt.date.today())
    print(json.dumps({"run": run.pk}), flush=True)
"""


def test_a_web_process_killed_between_commit_and_dispatch_loses_nothing(
    people: dict[str, Any], celery_worker_process: subprocess.Popen[bytes]
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=subprocess_env(DATABASE_URL=_test_database_url()),
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    run = ReportRun.objects.get(pk=json.loads(child.stdout.strip().splitlines()[-1])["run"])
    assert run.state == ReportState.QUEUED  # committed, never sent
    job = OutboxJob.objects.get(task="reports.generate", args=[run.pk])
    assert job.dispatched_at is None
    assert outbox_relay(grace_s=0) == 1
    _settle(timeout=120)
    run.refresh_from_db()
    assert run.state == ReportState.DONE and Entry.objects.filter(action="report.generated").count() == 1
