"""Concurrent registrations into one dataset or one model each get the next number: no integrity
error, no "retry" refusal, no number twice. Real threads and transactions (on PostgreSQL in the
scale pass, where only the row lock on the dataset or model orders them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from registry.models import DatasetVersion, ModelVersion
from registry.services import dataset_version_upload, model_create, model_version_register_folder
from registry.services import datasets as dataset_services
from registry.services import model_versions as model_version_services
from registry.tests.conftest import make_dataset
from tests.threads import run_together

THREADS = 6
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _no_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scans and mirrors these writes dispatch are not under test: a Celery worker left
    running by an earlier test would take them and write to the ledger while the test ends."""
    for module in (dataset_services, model_version_services):  # where the scans and mirrors are sent
        monkeypatch.setattr(module, "dispatch_on_commit", lambda *args, **kwargs: None)


def test_concurrent_uploads_to_one_dataset_are_numbered_one_after_another(people: dict[str, Any]) -> None:
    dataset = make_dataset(people)

    def upload(i: int) -> None:
        data = json.dumps({"text": f"upload {i}"}).encode() + b"\n"
        dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=data)

    assert run_together(upload, THREADS) == ["ok"] * THREADS
    numbers = sorted(DatasetVersion.objects.filter(dataset=dataset).values_list("number", flat=True))
    assert numbers == list(range(1, THREADS + 1))


def test_concurrent_registrations_of_one_model_are_numbered_one_after_another(
    people: dict[str, Any], tmp_path: Path
) -> None:
    model = model_create(actor=people["ml_engineer"], project=people["project"], slug="m", name="M")
    for i in range(THREADS):
        (tmp_path / f"w{i}").mkdir()
        (tmp_path / f"w{i}" / "model.safetensors").write_bytes(f"weights {i}".encode())

    def register(i: int) -> None:
        model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(tmp_path / f"w{i}"))

    with override_settings(REGISTRY_ALLOWED_ROOTS=[tmp_path.resolve()]):  # process-wide: set once
        assert run_together(register, THREADS) == ["ok"] * THREADS
    numbers = sorted(ModelVersion.objects.filter(model=model).values_list("number", flat=True))
    assert numbers == list(range(1, THREADS + 1))
