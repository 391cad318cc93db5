"""Celery tasks of the registry. They take ids, re-read rows and call services."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


@shared_task(name="registry.pii_scan", acks_late=True)
def pii_scan(scan_id: int) -> str | None:
    from registry.services import pii_scan_run

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    scan = pii_scan_run(scan_id=scan_id, actor=system)
    return scan.status if scan else None


@shared_task(name="registry.mlflow_mirror", acks_late=True)
def mlflow_mirror(model_version_id: int) -> str:
    from registry.services import model_version_mirror_to_mlflow

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    return model_version_mirror_to_mlflow(model_version_id=model_version_id, actor=system).mlflow_version
