"""Celery tasks of the model audits. They take ids, re-read rows and call services."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name="checks.security_scan", acks_late=True)
def security_scan(scan_id: int, idempotency_key: str) -> str | None:
    from audits.checks.services import security_scan_execute

    done = security_scan_execute(scan_id=scan_id, idempotency_key=idempotency_key, worker=_worker())
    return done.verdict or done.state if done else None


@shared_task(name="checks.bias_evaluation", acks_late=True)
def bias_evaluation(evaluation_id: int, idempotency_key: str) -> str | None:
    from audits.checks.services import bias_evaluation_execute

    done = bias_evaluation_execute(evaluation_id=evaluation_id, idempotency_key=idempotency_key, worker=_worker())
    return done.verdict or done.state if done else None


@shared_task(name="checks.rescan_due")
def rescan_due() -> int:
    from audits.checks.services import audits_rescan_due

    return len(audits_rescan_due(actor=get_user_model().objects.get(username=SYSTEM_USERNAME)))


@shared_task(name="checks.reap")
def reap() -> int:
    from audits.checks.services import audits_reap

    return audits_reap(actor=get_user_model().objects.get(username=SYSTEM_USERNAME))
