"""Requests to decide, made through the real services, for the decision page's tests: a dataset
version with no personal data (its scan run here), asked for training by the ML engineer. With
``risk_tier="high"`` the shipped policy asks a data steward and a compliance officer; without,
a data steward alone."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from governance.models import ApprovalRequest
from governance.services import approval_request_submit
from registry.models import DatasetVersion
from registry.services import dataset_version_upload
from registry.tests.conftest import make_dataset, scan_version

PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
ACTION = "dataset_version.use_for_training"


def clean_version(people: dict[str, Any], *, uploader: str = "ml_engineer", scanned: bool = True) -> DatasetVersion:
    dataset = make_dataset(people, slug=f"d{DatasetVersion.objects.count()}")
    data = f'{{"text": "the parcel arrived on time, case {DatasetVersion.objects.count()}"}}\n'.encode()
    version, _ = dataset_version_upload(actor=people[uploader], dataset=dataset, filename="t.jsonl", data=data)
    if scanned:
        with override_settings(**PATTERN_ONLY):
            scan_version(version, people["system"])  # here, or by a worker that claimed it first
    return version


def training_request(people: dict[str, Any], *, uploader: str = "ml_engineer", **context: str) -> ApprovalRequest:
    version = clean_version(people, uploader=uploader)
    return approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk), action=ACTION,
        context=context, comment="for the tone fine-tune",
    )  # fmt: skip
