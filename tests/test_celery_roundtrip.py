"""A task goes through the real broker to a real worker process and its result comes back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.result import AsyncResult
from django.db import transaction

from common.request_context import reset_request_id, set_request_id
from common.tasks import dispatch_on_commit
from config.celery import app, ping
from conftest import ROOT, subprocess_env


def test_ping_round_trip_through_the_real_broker(celery_worker_process: subprocess.Popen[bytes]) -> None:
    assert not app.conf.task_always_eager
    token = uuid.uuid4().hex
    request_id = f"req-{uuid.uuid4().hex}"
    context = set_request_id(request_id)
    try:
        result = ping.delay(token).get(timeout=60)
    finally:
        reset_request_id(context)
    assert result["token"] == token
    assert result["worker_pid"] != os.getpid()
    assert result["worker_pid"] != celery_worker_process.pid  # prefork: a child of the worker ran it
    assert result["request_id"] == request_id  # the dispatching request's id travels with the task


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_dispatch_on_commit_sends_only_committed_work(celery_worker_process: subprocess.Popen[bytes]) -> None:
    rolled_back, committed = uuid.uuid4().hex, uuid.uuid4().hex
    with pytest.raises(RuntimeError), transaction.atomic():
        dispatch_on_commit("system.ping", args=("never",), task_id=rolled_back)
        raise RuntimeError("the service failed after dispatching")
    with transaction.atomic():
        dispatch_on_commit("system.ping", args=("sent",), task_id=committed)
        assert AsyncResult(committed, app=app).state == "PENDING"  # not before the commit
    assert AsyncResult(committed, app=app).get(timeout=60)["token"] == "sent"
    assert AsyncResult(rolled_back, app=app).state == "PENDING"


_PUBLISH_AT = """
import sys, time
from config.celery import ping
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
for queue in sys.argv[2:]:
    ping.apply_async(args=["racing"], queue=queue)
"""


@pytest.mark.own_service
def test_declared_queues_let_processes_start_on_a_fresh_embedded_broker_at_once(tmp_path: Path) -> None:
    # Without the declaration, six processes publishing at the same instant to a fresh embedded
    # broker lost one of them to kombu's "table kombu_queue already exists" or "UNIQUE constraint
    # failed: kombu_queue.name" in three tries out of four here; `make up` lost its worker so.
    names = ["default", "cpu", "gpu"]
    broker = tmp_path / "broker.sqlite3"
    env = subprocess_env(
        embedded=True,
        GOV_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
        CELERY_BROKER_URL=f"sqla+sqlite:///{broker}",
    )
    declared = subprocess.run(
        [sys.executable, "-c", f"from config.celery import declare_queues; declare_queues(*{names!r}, 'cpu')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert declared.returncode == 0, declared.stderr
    with sqlite3.connect(broker) as db:
        assert sorted(row[0] for row in db.execute("SELECT name FROM kombu_queue")) == sorted(names)

    start = f"{time.time() + 3:.3f}"  # the children import in about 0.3 s: all wait for this instant
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISH_AT, start, *names],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    failures = [err for racer in racers if (err := racer.communicate(timeout=120)[1]) and racer.returncode]
    assert not failures, failures[0][-2000:]
    with sqlite3.connect(broker) as db:
        assert db.execute("SELECT count(*) FROM kombu_queue").fetchone()[0] == len(names)
        assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 6 * len(names)
