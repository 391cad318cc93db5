"""Requests for a preference fine-tune (method dpo): refused, with the field named, for a dataset
whose records are not pairs, a beta out of bounds, a beta on another method or a prompt template."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from audits.ledger.models import Entry
from common.errors import DomainError
from governance.services import approval_request_decide, approval_request_submit
from registry.models import Dataset, PiiScan
from registry.services import dataset_version_upload, pii_scan_run
from registry.tests.conftest import make_dataset
from training.engine import DPO_BETA_BOUNDS, Hyperparameters
from training.tests.conftest import PATTERN_ONLY, request_run

pytestmark = pytest.mark.django_db

DPO = {"method": "dpo", "learning_rate": 1e-4, "batch_size": 1, "max_steps": 1}


def _pairs(ready: dict[str, Any]) -> Any:
    """A version of three pairs, scanned and approved as ``upload_approved_version`` does."""
    dataset = make_dataset(ready, slug=f"pairs-{Dataset.objects.count()}")
    data = "".join(json.dumps({"prompt": f"q{i}", "chosen": "good", "rejected": "bad"}) + "\n" for i in range(3))
    with override_settings(PII_SCAN_QUEUE="training-tests"):
        version, _ = dataset_version_upload(actor=ready["ml_engineer"], dataset=dataset, filename="p.jsonl",
                                            data=data.encode())  # fmt: skip
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=ready["system"])
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_request_decide(actor=ready["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    version.refresh_from_db()
    return version


def test_dpo_requests_need_pairs_and_a_beta_in_bounds(ready: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as refused:  # records of plain texts
        request_run(ready, hyperparameters=DPO)
    assert refused.value.code == "invalid_dataset" and "needs prompt, chosen, rejected" in refused.value.message
    with pytest.raises(DomainError) as refused:
        request_run(ready, hyperparameters={**DPO, "method": "full", "beta": 0.1})
    assert "beta: only method dpo" in refused.value.message
    with pytest.raises(DomainError) as refused:
        request_run(ready, dataset_versions=[_pairs(ready)], hyperparameters={**DPO, "beta": 50})
    assert refused.value.code == "invalid_input" and f"from {DPO_BETA_BOUNDS[0]}" in refused.value.message
    with pytest.raises(ValueError, match="beta"):
        Hyperparameters(
            learning_rate=1e-4, batch_size=1, seed=0, method="dpo", max_steps=1, beta=float("nan")
        ).validate(1)


def test_a_dpo_request_on_pairs_is_recorded_with_its_beta(ready: dict[str, Any]) -> None:
    version = _pairs(ready)
    run = request_run(ready, dataset_versions=[version], hyperparameters={**DPO, "beta": 0.2})
    assert run.hyperparameters["method"] == "dpo" and run.hyperparameters["beta"] == 0.2
    payload = json.loads(bytes(Entry.objects.get(action="fine_tune_run.requested").body))["payload"]
    assert payload["examples"] == 3 and payload["hyperparameters"]["beta"] == 0.2
    with pytest.raises(DomainError) as refused:
        request_run(ready, dataset_versions=[version], hyperparameters={**DPO, "batch_size": 4})
    assert "batch_size" in refused.value.message
