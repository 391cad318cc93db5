from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from registry.models import Dataset, DatasetVersion, PiiScan, ScanStatus
from registry.services import dataset_create, pii_scan_run

User = get_user_model()


def make_dataset(people: dict[str, Any], slug: str = "tickets") -> Dataset:
    return dataset_create(
        actor=people["data_steward"],
        project=people["project"],
        slug=slug,
        name="Support tickets",
        purpose="fine-tune the support assistant",
        lawful_basis="legitimate_interests",
        retention_days=365,
        source="helpdesk export",
        data_steward=people["data_steward"],
        data_subject_categories=["customers"],
        personal_data_categories=["contact details"],
    )


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    return make_dataset(people)


def scan_version(version: DatasetVersion, actor: Any, timeout_s: float = 180) -> PiiScan:
    """Run ``version``'s PII scan here. In a test whose rows are committed, a Celery worker the
    suite keeps running may claim the scan first (its message is sent at the upload's commit, and
    Redis delivers it at once): then wait for that worker to finish it."""
    scan = PiiScan.objects.get(version=version)
    if pii_scan_run(scan_id=scan.pk, actor=actor) is None:
        deadline = time.monotonic() + timeout_s
        while PiiScan.objects.get(pk=scan.pk).status in (ScanStatus.QUEUED, ScanStatus.RUNNING):
            assert time.monotonic() < deadline, f"scan {scan.pk} claimed by a worker and not finished in {timeout_s} s"
            time.sleep(0.2)
    return PiiScan.objects.get(pk=scan.pk)
