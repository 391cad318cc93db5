"""A task goes through the real broker to a real worker process and its result comes back."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from celery.result import AsyncResult
from django.db import transaction

from common.request_context import reset_request_id, set_request_id
from common.tasks import dispatch_on_commit
from config.celery import app, ping


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
