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


@shared_task(name="registry.pii_scan_shard", acks_late=True)
def pii_scan_shard(shard_id: int) -> str | None:
    """One shard of a large scan: every worker on the scan queue takes some."""
    from registry.services import pii_scan_shard_run

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    shard = pii_scan_shard_run(shard_id=shard_id, actor=system)
    return shard.status if shard else None


@shared_task(name="registry.reap")
def reap() -> int:
    """Queue again the scans and scan shards whose worker was lost (beat runs this every minute)."""
    from registry.services import pii_scans_reap

    return pii_scans_reap()


@shared_task(name="registry.mlflow_mirror", acks_late=True)
def mlflow_mirror(model_version_id: int) -> str:
    from registry.services import model_version_mirror_to_mlflow

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    return model_version_mirror_to_mlflow(model_version_id=model_version_id, actor=system).mlflow_version


@shared_task(name="registry.anonymise", acks_late=True)
def anonymise(version_id: int, requested_by: str) -> int | None:
    """Build the anonymised version as the user who asked for it (their role was checked then);
    None when it could not be built (the failure is in the ledger)."""
    from registry.services import dataset_version_anonymise_run

    actor = get_user_model().objects.get(pk=int(requested_by))
    result = dataset_version_anonymise_run(version_id=version_id, actor=actor)
    return result[0].pk if result else None
