"""Celery tasks of training. They take ids, re-read rows and call services."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


@shared_task(name="training.run", acks_late=True)
def run(run_id: int, idempotency_key: str) -> str | None:
    """Train a queued run once; a second delivery of the same key finds it claimed."""
    from training.services import fine_tune_run_execute

    worker = f"{socket.gethostname()}:{os.getpid()}"
    done = fine_tune_run_execute(run_id=run_id, idempotency_key=idempotency_key, worker=worker)
    return done.state if done else None


@shared_task(name="training.reap")
def reap() -> int:
    """Fail the runs (fine-tune and optimisation) whose worker was lost, then scrub the working
    folders no live attempt owns."""
    from training.services import fine_tune_runs_reap, fine_tune_workdirs_sweep, optimisation_runs_reap

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    reaped = fine_tune_runs_reap(actor=system) + optimisation_runs_reap(actor=system)
    fine_tune_workdirs_sweep()
    return reaped


@shared_task(name="training.optimise", acks_late=True)
def optimise(run_id: int, idempotency_key: str) -> str | None:
    """Quantise and measure a queued optimisation run once; a second delivery finds it claimed."""
    from training.services import optimisation_run_execute

    worker = f"{socket.gethostname()}:{os.getpid()}"
    done = optimisation_run_execute(run_id=run_id, idempotency_key=idempotency_key, worker=worker)
    return done.state if done else None
