"""Feedback into training, through the real worker: a deployment that keeps transcripts serves the
tiny model, its answers are rated (one with a correction, one prompt answered twice and rated
apart), the export is approved and the worker registers the preference pairs as a dataset version
(the guard's redaction in it, the address not), the worker scans it, it is approved for training,
and a DPO run on it is approved and trained by the worker; the output's lineage walks back to the
deployment and its feedback, and the ledger says each step."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from audits.ledger.models import Entry
from common import artifacts
from governance.services import approval_request_decide, approval_request_submit
from registry.models import DatasetVersion, PiiVerdict
from registry.rules import use_status
from registry.services import dataset_version_review
from registry.tests.conftest import make_dataset
from serving.models import Deployment, DeploymentState
from serving.services import (
    deployment_client_credential_issue,
    deployment_feedback_give,
    deployment_request,
    deployment_retire,
)
from serving.services.preference import deployment_feedback_export_request
from serving.tests.conftest import staging_policies  # noqa: F401  (the fixture, shared)
from training.models import RunState
from training.tests.conftest import approve_run, ready, request_run, run_actions  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TARGET = {"max_tokens": 8, "max_prompt_chars": 400}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS"]}
CORRECTION = "I will send the refund form to your address today."


def _until(what: str, read: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.3)


def _complete(url: str, credential: str, prompt: str, max_tokens: int) -> str:
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/completions", body, headers), timeout=60) as answer:
        return str(answer.headers["X-Request-Id"])


def _payload(entry: Entry) -> Any:
    return json.loads(bytes(entry.body))["payload"]


def _actions(subject_type: str, subject_id: Any) -> list[str]:
    entries = Entry.objects.filter(subject_type=subject_type, subject_id=str(subject_id)).order_by("index")
    return list(entries.values_list("action", flat=True))


def test_feedback_becomes_a_preference_dataset_and_a_dpo_run_trains_on_it(
    ready: dict[str, Any],  # noqa: F811
    staging_policies: Any,  # noqa: F811
    celery_worker_process: subprocess.Popen[bytes],
) -> None:
    people = ready
    deployment = deployment_request(
        actor=people["ml_engineer"], model_version=people["base"], name="assistant", environment="staging",
        target=TARGET, guard=GUARD, keep_transcripts=True,
    )  # fmt: skip
    submitted = approval_request_submit(
        actor=people["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=people["platform-admin"], request_id=submitted.pk, decision="approve", reason="ok")
    live = _until(
        "the deployment to go live",
        lambda: Deployment.objects.filter(pk=deployment.pk).exclude(state__in=["requested", "starting"]).first(),
    )
    assert live.state == DeploymentState.LIVE, live.refusal_reason
    assert live.grants.get().statement["keep_transcripts"] is True
    _, credential = deployment_client_credential_issue(
        actor=people["platform-admin"], deployment=live, name="tests", expires_in_days=1
    )
    redacted = _complete(live.url, credential, "mail ana@example.org about the refund", 6)
    long_answer = _complete(live.url, credential, "where is my order", 6)
    short_answer = _complete(live.url, credential, "where is my order", 2)

    engineer = people["ml_engineer"]
    feedback = [
        deployment_feedback_give(
            actor=engineer, deployment=live, request_id=redacted, rating=1, category="incorrect", correction=CORRECTION
        ),
        deployment_feedback_give(actor=engineer, deployment=live, request_id=long_answer, rating=5, category="helpful"),
        deployment_feedback_give(
            actor=engineer, deployment=live, request_id=short_answer, rating=2, category="unhelpful"
        ),
    ]
    rated = Entry.objects.filter(action="deployment.feedback", subject_id=str(live.pk)).order_by("index")
    assert [_payload(e).get("correction_chars") for e in rated] == [len(CORRECTION), None, None]
    bodies = Entry.objects.values_list("body", flat=True)
    assert all(CORRECTION.encode() not in bytes(body) for body in bodies)  # never in clear

    dataset = make_dataset(people, slug="preferences")
    export = deployment_feedback_export_request(actor=engineer, deployment=live, dataset=dataset, comment="week 1")
    assert export.context["dataset"] == str(dataset.pk)
    approval_request_decide(actor=people["data_steward"], request_id=export.pk, decision="approve", reason="ok")
    version = _until("the preference version", lambda: DatasetVersion.objects.filter(dataset=dataset).first())
    version = _until(
        "its PII scan",
        lambda: DatasetVersion.objects.exclude(pii_verdict=PiiVerdict.PENDING).filter(pk=version.pk).first(),
    )
    pairs = [json.loads(line) for line in artifacts.blob_path(version.sha256).read_text().splitlines()]
    redacted_pair = next(p for p in pairs if p["chosen"] == CORRECTION)
    assert redacted_pair["prompt"] == "mail <EMAIL_ADDRESS> about the refund"
    assert "ana@example.org" not in artifacts.blob_path(version.sha256).read_text()
    ranked = next(p for p in pairs if p["prompt"] == "where is my order")
    assert len(pairs) == 2 and len(ranked["chosen"]) >= len(ranked["rejected"])
    assert version.derivation == "feedback" and version.record_count == 2

    if not use_status(version)[0]:  # a finding of the scan: the steward reviews it
        version = dataset_version_review(actor=people["data_steward"], version=version, decision="confirmed")
    use = approval_request_submit(
        actor=engineer, subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_request_decide(actor=people["data_steward"], request_id=use.pk, decision="approve", reason="ok")

    run = request_run(
        ready, name="preferences", dataset_versions=[version],
        hyperparameters={"method": "dpo", "beta": 0.1, "learning_rate": 1e-4, "batch_size": 2, "max_steps": 2},
    )  # fmt: skip
    run = approve_run(ready, run)
    run = _until("the DPO run", lambda: run.__class__.objects.filter(pk=run.pk, state__in=["succeeded", "failed"]))
    run = run.get()
    assert run.state == RunState.SUCCEEDED, run.failure_reason
    assert run.metrics["steps"] == 2 and run.metrics["final_loss"] > 0
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(run.metrics)
    assert run_actions(run)[-1] == "fine_tune_run.succeeded"

    # Lineage: model version -> dataset version -> deployment -> feedback.
    assert list(run.output.dataset_versions.all()) == [version]
    derived = Entry.objects.get(action="dataset_version.derived", subject_id=str(version.pk))
    provenance = _payload(derived)
    assert provenance["deployments"] == [live.pk] and provenance["approval_request"] == export.pk
    assert provenance["feedback"] == sorted(f.pk for f in feedback) and provenance["requests"] == 3
    assert provenance["by_rule"] == {"correction": 1, "ranking": 1}
    assert _actions("deployment", live.pk)[-2:] == ["approval.approved", "deployment.feedback_exported"]
    assert _actions("dataset_version", version.pk)[:3] == [
        "dataset_version.registered", "pii_scan.requested", "dataset_version.derived"
    ]  # fmt: skip
    # The worker's last write for this test, the output's MLflow mirror (dispatched when the output
    # registered), lands before the test's rows are flushed: once, on PostgreSQL, it came during
    # the flush and deadlocked its TRUNCATE. The deployment's server stops too.
    _until("the output's MLflow mirror", lambda: run.output.__class__.objects.get(pk=run.output.pk).mlflow_version)
    deployment_retire(actor=people["platform-admin"], deployment=live, reason="end of test")
