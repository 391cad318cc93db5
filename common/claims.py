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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Model
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


@dataclass(frozen=True)
class ClaimedJobs:
    """The rows of ``model`` that workers claim: ``state_field`` goes from ``queued`` to
    ``running`` with ``claimed_by`` and ``claimed_at`` set; ``queued_since`` is when a row was
    queued; the lease is the setting named ``lease_setting`` (read at each call). Every change is a
    conditional update, so two deliveries of one job never both hold it."""

    model: type[Model]
    state_field: str
    queued: str
    running: str
    queued_since: str
    lease_setting: str

    def _lease_s(self) -> float:
        return float(getattr(settings, self.lease_setting))

    def _rows(self, pk: Any, state: str, **where: Any) -> Any:
        return self.model.objects.filter(pk=pk, **{self.state_field: state}, **where)

    def claim(self, pk: Any, me: str, **fields: Any) -> bool:
        """Claim a queued row for worker ``me`` (setting ``fields`` too)."""
        now = timezone.now()
        return bool(
            self._rows(pk, self.queued).update(
                **{self.state_field: self.running}, claimed_by=me, claimed_at=now, **fields
            )
        )

    def take_over(self, pk: Any, me: str, **fields: Any) -> str | None:
        """Take a running row over for ``me`` when its claim is abandoned (``claim_abandoned``);
        returns the claimant it was taken from, or ``None`` when it was not taken."""
        running = self._rows(pk, self.running).values("claimed_by", "claimed_at").first()
        if running is None or not claim_abandoned(
            running["claimed_by"], running["claimed_at"], lease_s=self._lease_s()
        ):
            return None
        taken = self._rows(pk, self.running, claimed_by=running["claimed_by"]).update(
            claimed_by=me, claimed_at=timezone.now(), **fields
        )
        return running["claimed_by"] if taken else None

    def reap(self, *, task: str, queue: str, stale_queued_s: float | None = None, **fields: Any) -> int:
        """Send again, through the outbox, the jobs whose worker was lost: running under an
        abandoned claim (set back to queued, the claim cleared, ``fields`` set), or queued for
        longer than ``stale_queued_s`` (default: the lease), whose message went with a worker that
        died holding it. ``claimed_at`` marks when a job was last sent again, so one stale job is
        sent once per period, not on every call. Jobs are idempotent: one that was only slow is
        not done twice. Returns how many were sent."""
        from common.tasks import dispatch_on_commit

        lease = self._lease_s()
        stale = lease if stale_queued_s is None else stale_queued_s
        now = timezone.now()
        sent = 0
        rows = self.model.objects.filter(**{f"{self.state_field}__in": [self.running, self.queued]})
        for job in rows.only("pk", self.state_field, "claimed_by", "claimed_at", self.queued_since):
            with transaction.atomic():
                if getattr(job, self.state_field) == self.running:
                    if not claim_abandoned(job.claimed_by, job.claimed_at, lease_s=lease):
                        continue
                    requeued = self._rows(job.pk, self.running, claimed_by=job.claimed_by).update(
                        **{self.state_field: self.queued}, claimed_by="", claimed_at=now, **fields
                    )
                elif (now - (job.claimed_at or getattr(job, self.queued_since))).total_seconds() > stale:
                    requeued = self._rows(job.pk, self.queued, claimed_at=job.claimed_at).update(claimed_at=now)
                else:
                    continue
                if requeued:
                    dispatch_on_commit(task, args=(job.pk,), queue=queue)
                    sent += 1
        return sent
