"""Concurrent requests against one project's GPU-hours: the quota check and the row it guards are
one step, so no two requests are both checked against the same hours left. Real threads, real
transactions (on PostgreSQL in the scale pass, where nothing else serialises them)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.threads import run_together
from training.models import FineTuneRun
from training.services import gpu_quota_set, gpu_usage
from training.tests.conftest import request_run

THREADS = 6


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_gpu_requests_never_exceed_the_quota(ready: dict[str, Any]) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=10, reason="pilot")
    gpu = {"gpu_type": "h100", "gpu_count": 1, "gpu_hours_estimate": 4}
    outcomes = run_together(lambda i: request_run(ready, name=f"run {i}", **gpu), THREADS)
    assert outcomes == ["ok", "ok"] + ["quota_exceeded"] * (THREADS - 2), outcomes
    assert FineTuneRun.objects.count() == 2
    assert gpu_usage(ready["project"])["available"] == 2
