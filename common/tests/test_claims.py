"""The one reaper of abandoned claims (``common.claims``): when a claim is lost, and how the
sweep takes each due job by a conditional update. The reapers built on it (registry, training,
checks, reports) are tested with their own rows in their apps."""

from __future__ import annotations

import socket
import subprocess
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from common.claims import ClaimedJobs, claim_abandoned, worker_identity


def _jobs(**kwargs: Any) -> ClaimedJobs:
    return ClaimedJobs(object, "state", "queued", "running", "created_at", "PII_SCAN_LEASE_S", **kwargs)  # type: ignore[arg-type]


def _gone_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_claim_is_abandoned_when_its_process_here_is_gone_or_its_lease_ran_out() -> None:
    now = timezone.now()
    here = socket.gethostname()
    assert claim_abandoned(f"{here}:{_gone_pid()}", now, lease_s=3600)
    assert not claim_abandoned(worker_identity(), now, lease_s=3600)  # this very process
    assert not claim_abandoned(f"{here}:1", now, lease_s=3600)  # alive (init)
    assert not claim_abandoned("elsewhere:42", now, lease_s=3600)  # another host: the lease decides
    assert claim_abandoned("elsewhere:42", now - timedelta(hours=2), lease_s=3600)
    assert claim_abandoned("elsewhere:42", None, lease_s=3600)


def test_a_beating_job_is_lost_only_when_its_beat_is_older_than_the_lease() -> None:
    now = timezone.now()
    jobs = _jobs(beat="heartbeat_at", process_check=False)
    gone = f"{socket.gethostname()}:{_gone_pid()}"
    assert not jobs._lost(SimpleNamespace(claimed_by=gone, heartbeat_at=now), now, 60)
    assert jobs._lost(SimpleNamespace(claimed_by="w1:42", heartbeat_at=now - timedelta(seconds=61)), now, 60)
    assert not jobs._lost(SimpleNamespace(claimed_by="w1:42", heartbeat_at=None), now, 60)
    assert _jobs()._lost(SimpleNamespace(claimed_by=gone, claimed_at=now), now, 60)


@pytest.mark.django_db
def test_the_sweep_counts_only_the_due_jobs_it_took() -> None:
    taken: list[int] = []
    done = ClaimedJobs._sweep(
        [SimpleNamespace(pk=n) for n in range(6)],
        due=lambda job: job.pk % 2 == 0,  # 0, 2, 4
        take=lambda job: int(job.pk != 2),  # 2 changed meanwhile
        then=lambda job: taken.append(job.pk),
    )
    assert done == 2 and taken == [0, 4]
