"""The one way services hand work to Celery: through the transactional outbox.

``dispatch_on_commit`` records the job (``common.outbox``) in the caller's transaction and sends
it right after the commit; if the process dies between the commit and the send, or the broker is
down, the job stays pending and ``outbox_relay`` (beat's ``outbox.relay``, every
``OUTBOX_RELAY_EVERY_S``) sends it. A job is never sent for a transaction that rolled back, and
may be sent twice (a crash after the send, before it is marked): tasks take ids and claim their
work by a conditional update, so a second delivery does nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone


def celery_app() -> Any:
    return import_module(settings.CELERY_APP_MODULE).app


def _send(job: Any) -> bool:
    """Send one job and mark it sent; ``False`` (and the error kept) when the broker refused."""
    from common.outbox.models import OutboxJob

    try:
        celery_app().send_task(job.task, args=list(job.args), queue=job.queue or None, task_id=job.task_id)
    except Exception as exc:  # the broker is down: the relay tries again
        OutboxJob.objects.filter(pk=job.pk).update(attempts=job.attempts + 1, last_error=f"{type(exc).__name__}: {exc}")
        return False
    OutboxJob.objects.filter(pk=job.pk, dispatched_at__isnull=True).update(
        dispatched_at=timezone.now(), attempts=job.attempts + 1
    )
    return True


def dispatch_on_commit(
    task_name: str, *, args: tuple[Any, ...] = (), queue: str | None = None, task_id: str | None = None
) -> None:
    """Record ``task_name(*args)`` in the current transaction and send it once that commits;
    never if it rolls back."""
    from common.outbox.models import OutboxJob

    job = OutboxJob.objects.create(
        task=task_name, args=list(args), queue=queue or "", task_id=task_id or str(uuid.uuid4())
    )
    transaction.on_commit(lambda: _send(job))


def outbox_relay(*, grace_s: float | None = None, limit: int = 500) -> int:
    """Send the jobs still pending ``grace_s`` after they were recorded (their committer died, or
    the broker was down). Returns how many were sent."""
    from common.outbox.models import OutboxJob

    grace = settings.OUTBOX_RELAY_GRACE_S if grace_s is None else grace_s
    cutoff = timezone.now() - timedelta(seconds=grace)
    pending = OutboxJob.objects.filter(dispatched_at__isnull=True, created_at__lte=cutoff).order_by("created_at")
    return sum(_send(job) for job in pending[:limit])


def outbox_prune() -> int:
    """Forget jobs sent more than ``OUTBOX_KEEP_SENT_S`` ago (the ledger records what they did)."""
    from common.outbox.models import OutboxJob

    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_KEEP_SENT_S)
    return OutboxJob.objects.filter(dispatched_at__lt=cutoff).delete()[0]
