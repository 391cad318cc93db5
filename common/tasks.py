"""The one way services hand work to Celery: after their transaction commits.

``dispatch_on_commit`` makes sure the service's Celery app (``settings.CELERY_APP_MODULE``) is
loaded, so tasks declared with ``shared_task`` bind to it and not to Celery's default app, then
sends the task when, and only if, the surrounding transaction commits.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import transaction


def celery_app() -> Any:
    return import_module(settings.CELERY_APP_MODULE).app


def dispatch_on_commit(
    task_name: str, *, args: tuple[Any, ...] = (), queue: str | None = None, task_id: str | None = None
) -> None:
    """Send ``task_name`` once the current transaction commits; never if it rolls back."""
    app = celery_app()

    def send() -> None:
        app.send_task(task_name, args=args, queue=queue, task_id=task_id)

    transaction.on_commit(send)
