"""Who is doing a job, and whether the one who claimed it is gone.

Workers claim work by a conditional update that records ``worker_identity()`` (host and process
id). When a worker process dies mid-job (killed, out of memory), Celery redelivers the message
(``acks_late`` with ``reject_on_worker_lost``); the new delivery finds the job claimed. It may take
the job over when the claimant was a process on this host that no longer exists, or, for any
host, when the claim is older than the job's lease.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

logger = logging.getLogger(__name__)


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
    ``running`` with ``claimed_by`` and ``beat`` set; ``queued_since`` is when a row was queued;
    the lease is the setting named ``lease_setting`` (read at each call). Every change is a
    conditional update, so two deliveries of one job never both hold it.

    ``beat`` is when the claim was last renewed: ``claimed_at`` (a claim sets it), or
    ``heartbeat_at`` where the worker beats while it works; on a queued row, when it was last sent
    again. ``process_check``: a claim whose process on this host is gone is lost at once
    (``claim_abandoned``); without it, a claim is lost only when its beat is older than the lease.

    This is the one reaper of abandoned claims: ``reap`` (queue lost jobs again), ``fail_lost``
    (fail them, for jobs that are not simply done again) and ``resend_stale_queued`` all walk the
    candidates the same way (``_sweep``)."""

    model: type[Model]
    state_field: str
    queued: str
    running: str
    queued_since: str
    lease_setting: str
    beat: str = "claimed_at"
    process_check: bool = True

    def _lease_s(self) -> float:
        return float(getattr(settings, self.lease_setting))

    def _rows(self, pk: Any, state: str, **where: Any) -> Any:
        return self.model.objects.filter(pk=pk, **{self.state_field: state}, **where)

    def claim(self, pk: Any, me: str, **fields: Any) -> bool:
        """Claim a queued row for worker ``me`` (setting ``fields`` too)."""
        now = timezone.now()
        return bool(
            self._rows(pk, self.queued).update(
                **{self.state_field: self.running, "claimed_by": me, self.beat: now}, **fields
            )
        )

    def take_over(self, pk: Any, me: str, **fields: Any) -> str | None:
        """Take a running row over for ``me`` when its claim is abandoned (``claim_abandoned``);
        returns the claimant it was taken from, or ``None`` when it was not taken."""
        running = self._rows(pk, self.running).values("claimed_by", self.beat).first()
        if running is None or not claim_abandoned(running["claimed_by"], running[self.beat], lease_s=self._lease_s()):
            return None
        taken = self._rows(pk, self.running, claimed_by=running["claimed_by"]).update(
            **{"claimed_by": me, self.beat: timezone.now()}, **fields
        )
        return running["claimed_by"] if taken else None

    def _lost(self, job: Any, now: datetime, lease_s: float) -> bool:
        beat = getattr(job, self.beat)
        if self.process_check:
            return claim_abandoned(job.claimed_by, beat, lease_s=lease_s)
        return beat is not None and now - beat > timedelta(seconds=lease_s)

    def _lost_candidates(self, now: datetime, lease_s: float) -> Any:
        running = self.model.objects.filter(**{self.state_field: self.running})
        if self.process_check:
            return running  # a gone process is seen row by row
        return running.filter(**{f"{self.beat}__lt": now - timedelta(seconds=lease_s)})

    def _taken_as_read(self, job: Any) -> Any:
        """The row while it still holds the claim and beat it was read with: a job that beat,
        ended or was taken by another pass meanwhile is left alone."""
        return self._rows(job.pk, self.running, claimed_by=job.claimed_by, **{self.beat: getattr(job, self.beat)})

    @staticmethod
    def _sweep(
        jobs: Iterable[Any], *, due: Callable[[Any], bool], take: Callable[[Any], int], then: Callable[[Any], None]
    ) -> int:
        """For each job that is ``due``, in one transaction: ``take`` it by a conditional update
        on what was read and, when that changed a row, ``then`` (send it again, record its end).
        Returns how many were taken."""
        done = 0
        for job in jobs:
            if not due(job):
                continue
            with transaction.atomic():
                if not take(job):
                    continue  # claimed, beat, ended or reaped by another pass in the meantime
                then(job)
            done += 1
        return done

    def reap(self, *, task: str, queue: str, stale_queued_s: float | None = None, **fields: Any) -> int:
        """Send again, through the outbox, the jobs whose worker was lost: running under an
        abandoned claim (set back to queued, the claim cleared, ``fields`` set), or queued for
        longer than ``stale_queued_s`` (default: the lease), whose message went with a worker that
        died holding it (``resend_stale_queued``). Jobs are idempotent: one that was only slow is
        not done twice. Returns how many were sent."""
        from common.tasks import dispatch_on_commit

        # The queued first: a job queued again below is not also sent as stale.
        sent = self.resend_stale_queued(task=task, queue=queue, stale_queued_s=stale_queued_s)
        lease = self._lease_s()
        now = timezone.now()
        return sent + self._sweep(
            self._lost_candidates(now, lease).only("pk", "claimed_by", self.beat),
            due=lambda job: self._lost(job, now, lease),
            take=lambda job: self._taken_as_read(job).update(
                **{self.state_field: self.queued, "claimed_by": "", self.beat: now}, **fields
            ),
            then=lambda job: dispatch_on_commit(task, args=(job.pk,), queue=queue),
        )

    def fail_lost(self, *, failed: str, reason: Callable[[Any], str], record: Callable[[Any], None]) -> int:
        """Fail the running jobs whose worker was lost, for jobs not simply done again (a run
        that holds resources, a result a person judges): state ``failed``, ``failure_reason``
        ``reason(job)`` (the job as read), ``finished_at`` now; then, in the same transaction,
        ``record(job)`` with the job read again (the caller's ledger entry). Returns how many."""
        lease = self._lease_s()
        now = timezone.now()

        def recorded(job: Any) -> None:
            job.refresh_from_db()
            record(job)

        return self._sweep(
            self._lost_candidates(now, lease),
            due=lambda job: self._lost(job, now, lease),
            take=lambda job: self._taken_as_read(job).update(
                **{self.state_field: failed}, failure_reason=reason(job), finished_at=timezone.now()
            ),
            then=recorded,
        )

    def resend_stale_queued(
        self, *, task: str, queue: str, stale_queued_s: float | None = None, keyed: bool = False
    ) -> int:
        """Send again, through the outbox, the jobs queued for longer than ``stale_queued_s``
        (default: the lease): their message went with a broker or a worker that lost it. ``beat``
        marks when a job was last sent again, so one stale job is sent once per period, not on
        every call; its age counts from ``queued_since`` before that. ``keyed``: the job is sent
        with its ``idempotency_key`` (``task(pk, key)``), and only while it still has that key.
        Nothing is recorded in the ledger. Returns how many were sent."""
        from common.tasks import dispatch_on_commit

        stale = self._lease_s() if stale_queued_s is None else stale_queued_s
        now = timezone.now()
        queued = self.model.objects.filter(**{self.state_field: self.queued})
        if keyed:
            queued = queued.filter(idempotency_key__isnull=False)
        fields = ["pk", self.beat, self.queued_since, *(["idempotency_key"] if keyed else [])]

        def take(job: Any) -> int:
            same = {self.beat: getattr(job, self.beat)}
            if keyed:
                same["idempotency_key"] = job.idempotency_key
            return self._rows(job.pk, self.queued, **same).update(**{self.beat: now})

        def send(job: Any) -> None:
            args = (job.pk, str(job.idempotency_key)) if keyed else (job.pk,)
            # A job id of its own: the outbox holds one job per id, and the first is taken.
            dispatch_on_commit(task, args=args, queue=queue)
            logger.info(
                "%s %s: still queued after %g s, sent again as %s%r", self.model.__name__, job.pk, stale, task, args
            )

        return self._sweep(
            queued.only(*fields),
            due=lambda job: (
                (now - (getattr(job, self.beat) or getattr(job, self.queued_since))).total_seconds() > stale
            ),
            take=take,
            then=send,
        )
