"""An optimisation run on the real Celery worker and broker: request, approval, ONNX export and
dynamic int8 quantisation of a (briefly trained) tiny model, its quality delta, latency and size
figures, the registered int8 version and its lineage, the ledger; a redelivery that does nothing;
the deployment gate against a bound it meets and one it misses; and the int8 version served as it
is by the model server on runtime ``onnx`` (exported by the worker's ``serving.export`` step).

One run, one test: the worker, the quantisation and the server are the expensive parts (about a
minute together on two cores), so every assertion reads the same run."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from common.errors import DomainError
from conftest import ROOT
from governance.services import approval_request_decide, approval_request_submit
from registry.models import ModelVersion
from registry.services import dataset_version_digest
from training.models import OptimisationRun, RunState
from training.services import optimisation_run_request_submit, quantisation_within_bounds
from training.tests.optimising import (
    EVALUATION_TEXTS,
    actions,
    build_trained_tiny,
    evaluation_set,
    payload,
    policies_with,
    register_trained,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_trained_tiny(tmp_path_factory.mktemp("optimise") / "trained")


def _wait(run_id: int, timeout: float = 240) -> OptimisationRun:
    deadline = time.monotonic() + timeout
    while True:
        run = OptimisationRun.objects.get(pk=run_id)
        if run.state in (RunState.SUCCEEDED, RunState.FAILED):
            return run
        assert time.monotonic() < deadline, f"optimisation run {run_id} is still {run.state} after {timeout} s"
        time.sleep(0.5)


def test_quantise_measure_register_gate_and_serve_through_the_worker(
    ready: dict[str, Any],
    trained: Path,
    celery_worker_process: subprocess.Popen[bytes],
    tmp_path: Path,
    settings: Any,
) -> None:
    source = register_trained(ready, trained)
    evaluation = evaluation_set(ready)
    run, approval = optimisation_run_request_submit(
        actor=ready["ml_engineer"], project=ready["project"], source=source, evaluation_set=evaluation,
        comment="int8 for the CPU pool",
    )  # fmt: skip
    approval_request_decide(actor=ready["ml-engineer-2"], request_id=approval.pk, decision="approve", reason="ok")
    run = _wait(run.pk)
    assert run.state == RunState.SUCCEEDED, run.failure_reason

    # The figures: both models measured on the same records and tokens.
    m = run.metrics
    assert m["records"] == len(EVALUATION_TEXTS) and m["fp32"]["tokens"] == m["int8"]["tokens"] > len(EVALUATION_TEXTS)
    for name in ("fp32", "int8"):
        assert math.isfinite(m[name]["perplexity"]) and 1 < m[name]["perplexity"] < 300  # below uniform (300 tokens)
        assert m[name]["latency_ms_p50"] > 0
    assert m["int8"]["size_bytes"] < m["fp32"]["size_bytes"]
    assert m["perplexity_delta"] == pytest.approx(m["int8"]["perplexity"] / m["fp32"]["perplexity"] - 1)
    # Trained weights sit at a minimum of the loss: int8 rounding costs perplexity, a little.
    assert 0 < m["perplexity_delta"] < 0.5

    # The output: a new version of the same model, the int8 export, with its lineage.
    output = ModelVersion.objects.get(pk=run.output_id)
    assert output.model_id == source.model_id and output.base_id == source.pk and output.number == source.number + 1
    assert "model.onnx" in output.files and "tokenizer.json" in output.files
    assert not any(name.endswith(".safetensors") for name in output.files)
    assert output.lineage["optimisation_run"] == run.pk and output.lineage["method"] == "onnx_dynamic_int8"
    assert output.lineage["source_weights_digest"] == source.weights_digest
    assert output.lineage["evaluation_set"] == dataset_version_digest(evaluation)
    assert output.lineage["figures"] == m

    # Its mirror into the MLflow registry (a task of its own on the worker) is done before the
    # test ends, so that the worker writes no entry after the ledger is wiped.
    deadline = time.monotonic() + 60
    while not ModelVersion.objects.get(pk=output.pk).mlflow_version:
        assert time.monotonic() < deadline, "the int8 version was not mirrored into the MLflow registry"
        time.sleep(0.3)

    # The ledger, in order; the end entry carries the figures and the output's digest.
    assert actions(run) == [
        "optimisation_run.requested", "optimisation_run.queued", "optimisation_run.started",
        "optimisation_run.succeeded",
    ]  # fmt: skip
    assert payload(run, "optimisation_run.succeeded")["output"] == output.weights_digest
    assert payload(run, "optimisation_run.succeeded")["metrics"]["perplexity_delta"] == m["perplexity_delta"]
    assert payload(run, "optimisation_run.requested")["evaluation_set"] == dataset_version_digest(evaluation)

    # A redelivery of the same message, through the broker to the worker: the claim is taken.
    from common.tasks import celery_app

    versions = ModelVersion.objects.count()
    redelivered = celery_app().send_task("training.optimise", args=(run.pk, str(run.idempotency_key)), queue="cpu")
    assert redelivered.get(timeout=60) is None
    assert ModelVersion.objects.count() == versions and len(actions(run)) == 4

    # The evidence: the bound against the measured delta, in figures.
    delta = m["perplexity_delta"]
    holds, detail = quantisation_within_bounds(output, max_perplexity_increase=delta * 2)
    assert holds and f"{delta:+.4%}" in detail and f"{delta * 2:.4%}" in detail
    holds, detail = quantisation_within_bounds(output, max_perplexity_increase=delta / 2)
    assert not holds and "over the allowed" in detail and f"{delta / 2:.4%}" in detail
    assert quantisation_within_bounds(source, max_perplexity_increase=0.0)[0]  # not quantised: no bound

    # Through a policy: a bound the version misses holds its deployment back, naming both figures.
    settings.POLICY_DIR = policies_with(
        tmp_path / "tight", ROOT / "policies",
        deploy_evidence=f"{{check: quantisation_within_bounds, max_perplexity_increase: {delta / 2!r}}}",
    )  # fmt: skip
    with pytest.raises(DomainError, match="quantisation_within_bounds") as refused:
        request = approval_request_submit(
            actor=ready["ml_engineer"], subject_type="model_version", subject_id=str(output.pk),
            action="model_version.deploy",
        )  # fmt: skip
        approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    assert refused.value.code == "evidence_missing" and f"{delta:+.4%}" in refused.value.message

    # A bound it meets: the staging deployment on runtime onnx is approved, and the worker serves
    # the registered int8 folder as it is (no second export): the grant names its own digest.
    settings.POLICY_DIR = policies_with(
        tmp_path / "loose", ROOT / "policies",
        deploy_evidence="{check: quantisation_within_bounds, max_perplexity_increase: 0.5}",
    )  # fmt: skip
    _serve_and_check(ready, output)


def _serve_and_check(ready: dict[str, Any], output: ModelVersion) -> None:
    from serving.models import Deployment, DeploymentState
    from serving.services import deployment_client_credential_issue, deployment_request, deployment_retire

    deployment = deployment_request(
        actor=ready["ml_engineer"], model_version=output, name="assistant-int8", environment="staging",
        target={"max_tokens": 8, "max_prompt_chars": 400}, guard={"mode": "off"}, runtime="onnx",
    )  # fmt: skip
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy"
    )
    approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deadline = time.monotonic() + 240
    while (live := Deployment.objects.get(pk=deployment.pk)).state == DeploymentState.STARTING:
        assert time.monotonic() < deadline, "the int8 deployment did not start"
        time.sleep(0.5)
    try:
        assert live.state == DeploymentState.LIVE, live.refusal_reason
        assert live.grants.get().statement["weights_digest"] == output.weights_digest
        _, credential = deployment_client_credential_issue(
            actor=ready["platform-admin"], deployment=live, name="tests", expires_in_days=1
        )
        body = json.dumps({"prompt": "the customer asked", "max_tokens": 4}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        call = urllib.request.Request(f"{live.url}/v1/completions", body, headers)
        with urllib.request.urlopen(call, timeout=60) as response:
            assert json.loads(response.read())["model_digest"] == output.weights_digest
    finally:
        deployment_retire(actor=ready["platform-admin"], deployment=live, reason="end of test")
