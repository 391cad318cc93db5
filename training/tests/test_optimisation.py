"""Optimisation run requests and their governance, in process (no worker, no quantisation): bad
input refused naming the field with nothing changed, the request's ledger entry, the evaluation
set's approval as the policy's evidence, the approval that queues the run, and the deployment
evidence of a version that is not quantised. The quantisation itself, through the real worker, is
in ``test_optimisation_worker``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.errors import DomainError, PermissionDenied
from governance.services import approval_request_decide, approval_request_submit
from registry.services import dataset_version_digest
from training.models import OptimisationRun, RunState
from training.services import (
    optimisation_run_digest,
    optimisation_run_request,
    quantisation_within_bounds,
)
from training.tests.optimising import actions, evaluation_set, payload

pytestmark = pytest.mark.django_db


def _request(ready: dict[str, Any], **overrides: Any) -> OptimisationRun:
    arguments: dict[str, Any] = {
        "actor": ready["ml_engineer"], "project": ready["project"], "source": ready["base"],
        "evaluation_set": ready["evaluation"],
    }  # fmt: skip
    arguments.update(overrides)
    return optimisation_run_request(**arguments)


@pytest.fixture
def with_evaluation(ready: dict[str, Any]) -> dict[str, Any]:
    return {**ready, "evaluation": evaluation_set(ready)}


def test_a_request_is_recorded_on_the_ledger(with_evaluation: dict[str, Any]) -> None:
    run = _request(with_evaluation)
    assert run.state == RunState.REQUESTED and run.method == "onnx_dynamic_int8"
    assert actions(run) == ["optimisation_run.requested"]
    entry = payload(run, "optimisation_run.requested")
    assert entry["source"] == with_evaluation["base"].weights_digest and entry["records"] == 12
    assert entry["evaluation_set"] == dataset_version_digest(with_evaluation["evaluation"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "gguf_q4"}, "method"),
        ({"max_length": 1}, "max_length"),
        ({"max_length": 10**6}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"text_field": "answer"}, "text_field"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    with_evaluation: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(DomainError) as refused:
        _request(with_evaluation, **overrides)
    assert refused.value.code == "invalid_input" and field in refused.value.fields
    assert not OptimisationRun.objects.exists()


def test_an_onnx_export_or_another_project_is_no_source(
    with_evaluation: dict[str, Any], elsewhere: Any, tmp_path: Path
) -> None:
    from django.test import override_settings

    from registry.services import model_version_register_folder

    folder = tmp_path / "exports" / "int8"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"an export")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "exports").resolve()]):
        export, _ = model_version_register_folder(
            actor=with_evaluation["ml_engineer"], model=with_evaluation["base"].model, folder=str(folder)
        )
    with pytest.raises(DomainError, match="is an ONNX export already"):
        _request(with_evaluation, source=export)
    with pytest.raises(DomainError, match=r"source: model version .* belongs to another project"):
        _request(with_evaluation, source=elsewhere["model_version"])
    with pytest.raises(DomainError, match=r"evaluation_set: dataset version .* belongs to another project"):
        _request(with_evaluation, evaluation_set=elsewhere["dataset_version"])
    assert not OptimisationRun.objects.exists()


def test_only_ml_engineers_request(with_evaluation: dict[str, Any]) -> None:
    with pytest.raises(PermissionDenied):
        _request(with_evaluation, actor=with_evaluation["auditor"])
    assert not OptimisationRun.objects.exists()


def test_an_evaluation_set_not_approved_for_evaluation_holds_the_run_back(ready: dict[str, Any]) -> None:
    run = _request({**ready, "evaluation": evaluation_set(ready, approved=False)})
    with pytest.raises(DomainError, match="evaluation_set_approved") as refused:
        request = approval_request_submit(
            actor=ready["ml_engineer"], subject_type="optimisation_run", subject_id=str(run.pk),
            action="optimisation_run.execute",
        )  # fmt: skip
        approval_request_decide(actor=ready["ml-engineer-2"], request_id=request.pk, decision="approve", reason="ok")
    assert "dataset_version.use_for_evaluation" in refused.value.message
    run.refresh_from_db()
    assert run.state == RunState.REQUESTED and actions(run) == ["optimisation_run.requested"]


def test_an_approval_queues_the_run_for_its_digest(with_evaluation: dict[str, Any]) -> None:
    from governance.services import approval_holds

    run = _request(with_evaluation)
    request = approval_request_submit(
        actor=with_evaluation["ml_engineer"], subject_type="optimisation_run", subject_id=str(run.pk),
        action="optimisation_run.execute",
    )  # fmt: skip
    with pytest.raises(DomainError):  # the requester never approves its own run
        approval_request_decide(
            actor=with_evaluation["ml_engineer"], request_id=request.pk, decision="approve", reason="mine"
        )
    approval_request_decide(
        actor=with_evaluation["ml-engineer-2"], request_id=request.pk, decision="approve", reason="ok"
    )
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.attempt == 1 and run.idempotency_key is not None
    assert actions(run) == ["optimisation_run.requested", "optimisation_run.queued"]
    assert payload(run, "optimisation_run.queued")["idempotency_key"] == str(run.idempotency_key)
    assert approval_holds(
        subject_type="optimisation_run", subject_id=str(run.pk), action="optimisation_run.execute",
        digest=optimisation_run_digest(run),
    )  # fmt: skip


def test_a_version_no_optimisation_made_meets_any_bound(ready: dict[str, Any]) -> None:
    holds, detail = quantisation_within_bounds(ready["base"], max_perplexity_increase=0.0)
    assert holds and "not a quantised version" in detail
