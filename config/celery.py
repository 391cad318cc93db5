"""The Celery app. Workers: ``celery -A config worker``; beat: ``celery -A config beat``.

Tasks live in each app's ``tasks.py`` (found by autodiscovery); they take ids, re-read rows and
call services. The request id of the request that dispatched a task travels in the message
headers, so the task's log lines and ledger entries carry it too.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("governance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_REQUEST_ID_HEADER = "request_id"


@signals.before_task_publish.connect
def _stamp_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    from common.request_context import get_request_id

    if headers is not None and _REQUEST_ID_HEADER not in headers:
        headers[_REQUEST_ID_HEADER] = get_request_id()


@signals.worker_init.connect
@signals.beat_init.connect
def _require_signing_key(**_: Any) -> None:
    from audits.checks.checks import require_valid_profiles
    from audits.ledger.checks import require_signing_key
    from governance.checks import require_valid_policies

    require_signing_key()
    require_valid_policies()
    require_valid_profiles()


@signals.worker_ready.connect
def _sweep_training_folders(**_: Any) -> None:
    """A worker killed outright left its runs' working folders on this host: scrub them now
    (the reaper's sweep runs on one host only)."""
    from django.db import connection

    from training.services import fine_tune_workdirs_sweep

    try:
        fine_tune_workdirs_sweep()
    except Exception:  # the worker starts anyway; the reaper's sweep tries again
        logging.getLogger("training").exception("sweeping the training folders at worker start failed")
    finally:
        connection.close()  # pool processes forked later must not share this connection


_integrator: subprocess.Popen[bytes] | None = None


@signals.worker_ready.connect
def _start_integrator(**_: Any) -> None:
    """Deferred sequencing (PostgreSQL): each worker starts the ledger's integrator beside itself, a
    process of its own (``manage.py ledger integrate --follow``) that ends with the worker. Several
    workers' integrators take turns on the head's row lock; one suffices, more stand by."""
    global _integrator
    from django.conf import settings

    if settings.LEDGER_SEQUENCING != "deferred" or _integrator is not None:
        return
    manage = Path(settings.BASE_DIR) / "manage.py"
    _integrator = subprocess.Popen(
        [sys.executable, str(manage), "ledger", "integrate", "--follow", "--parent", str(os.getpid())]
    )


@signals.worker_shutdown.connect
def _stop_integrator(**_: Any) -> None:
    if _integrator is not None and _integrator.poll() is None:
        _integrator.terminate()
        try:
            _integrator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _integrator.kill()


@signals.task_prerun.connect
def _adopt_request_id(task: Any = None, **_: Any) -> None:
    from common.request_context import accept_request_id, set_request_id

    carried = getattr(task.request, _REQUEST_ID_HEADER, None) if task is not None else None
    set_request_id(accept_request_id(carried))


@signals.task_postrun.connect
def _forget_request_id(**_: Any) -> None:
    from common.request_context import set_request_id

    set_request_id(None)


def declare_queues(*names: str) -> None:
    """Create the named queues on the broker, from this one process.

    On the embedded broker every process creates a queue (and the broker's tables) the first time
    it uses it, and kombu's SQLAlchemy transport does not survive two processes doing so at once:
    the loser's unique-constraint error ends a worker at start-up. Whoever starts a worker and the
    processes that publish to it (``make up``, the tests) declares the queues first. On Redis this
    is harmless.
    """
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in dict.fromkeys(names):
            channel.queue_declare(queue=name)


@app.task(name="system.ping", acks_late=True)
def ping(token: str) -> dict[str, Any]:
    """A trivial task that proves the broker round trip: echoes the token and names the worker."""
    from common.request_context import get_request_id

    return {
        "token": token,
        "worker_pid": os.getpid(),
        "worker_host": socket.gethostname(),
        "request_id": get_request_id(),
    }
