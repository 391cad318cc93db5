"""Who is doing a job, and whether the one who claimed it is gone.

Workers claim work by a conditional update that records ``worker_identity()`` (host and process
id). When a worker process dies mid-job (killed, out of memory), Celery redelivers the message
(``acks_late`` with ``reject_on_worker_lost``); the new delivery finds the job claimed. It may take
the job over when the claimant was a process on this host that no longer exists, or, for any
host, when the claim is older than the job's lease.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from django.utils import timezone


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def claim_abandoned(claimed_by: str, claimed_at: datetime | None, *, lease_s: float) -> bool:
    """Whether a claim may be taken over: its process on this host is gone, or it is older than
    ``lease_s`` (a claimant on another host cannot be checked)."""
    host, _, pid = claimed_by.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        if not _process_exists(int(pid)):
            return True
    return claimed_at is None or timezone.now() - claimed_at > timedelta(seconds=lease_s)
