"""An ML engineer asks for a fine-tune run and a deployment on the admin's request pages: one
service records the request and opens its approval request (both ledgered); bad input is
explained on the form and changes nothing; a person without the role gets no page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApprovalRequest
from serving.models import Deployment
from serving.tests.conftest import staging_policies  # noqa: F401  (staging asks for approved training data only)
from training.models import FineTuneRun
from training.tests.conftest import ready as ready_fixture  # noqa: F401  (fixture "ready": a base and a dataset version)

pytestmark = pytest.mark.django_db

RUN_ADD = "/admin/training/finetunerun/add/"
DEPLOYMENT_ADD = "/admin/serving/deployment/add/"


def _client(user: Any) -> Client:
    client = Client()
    admin_login(client, user)
    return client


def _actions_since(start: int) -> list[str]:
    return [
        json.loads(bytes(b))["action"] for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)
    ]


def _run_form(ready: dict[str, Any], **changes: Any) -> dict[str, Any]:
    form = {
        "name": "support-tone", "base": ready["base"].pk, "dataset_versions": [ready["version"].pk],
        "text_field": "text", "method": "full", "epochs": "1", "learning_rate": "0.005", "batch_size": "4",
        "seed": "1", "gpu_count": "0", "gpu_type": "", "gpu_hours_estimate": "0", "comment": "a friendlier tone",
    }  # fmt: skip
    return {**form, **changes}


def _deployment_form(ready: dict[str, Any], **changes: Any) -> dict[str, Any]:
    form = {
        "name": "support-assistant", "model_version": ready["base"].pk, "environment": "staging",
        "runtime": "transformers", "prompt_template": "", "replicas": "1", "gpu_count": "0", "gpu_type": "",
        "max_tokens": "64", "guard_mode": "redact", "guard_entities": ["EMAIL_ADDRESS", "PERSON"], "comment": "",
    }  # fmt: skip
    return {**form, **changes}


def test_an_engineer_requests_a_fine_tune_run_and_its_approval(ready: dict[str, Any]) -> None:
    client = _client(ready["ml_engineer"])
    page = client.get(RUN_ADD).content.decode()
    assert "Request a fine-tune run" in page and str(ready["version"]) in page
    assert 'href="/admin/training/finetunerun/add/"' in client.get("/admin/training/finetunerun/").content.decode()
    start = Entry.objects.count()
    answer = client.post(RUN_ADD, _run_form(ready), follow=True)
    run = FineTuneRun.objects.get()
    assert answer.redirect_chain[-1][0] == f"/admin/training/finetunerun/{run.pk}/change/"
    approval = ApprovalRequest.objects.get(subject_type="fine_tune_run", subject_id=str(run.pk))
    [message] = [str(m) for m in answer.context["messages"]]
    assert message == f"Fine-tune run #{run.pk} requested; approval request #{approval.pk} waits for 1 ml engineer."
    assert run.requested_by == ready["ml_engineer"] and list(run.dataset_versions.all()) == [ready["version"]]
    assert run.hyperparameters["epochs"] == 1 and run.hyperparameters["learning_rate"] == 0.005
    assert approval.state == "pending" and approval.action == "fine_tune_run.execute"
    assert approval.comment == "a friendlier tone"
    assert _actions_since(start) == ["fine_tune_run.requested", "approval.requested"]


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"gpu_count": "1", "gpu_type": "h100", "gpu_hours_estimate": "0"}, "needs an estimate of its GPU-hours"),
        ({"gpu_count": "1", "gpu_type": ""}, "this platform has no GPU type"),
        ({"dataset_versions": []}, "This field is required."),
        ({"text_field": "answer"}, "no record of the dataset versions has a non-empty field"),
        ({"learning_rate": "fast"}, "Enter a number."),
    ],
)
def test_a_refused_run_request_is_explained_and_makes_nothing(
    ready: dict[str, Any], changes: dict[str, Any], shown: str
) -> None:
    client = _client(ready["ml_engineer"])
    start = Entry.objects.count()
    page = client.post(RUN_ADD, _run_form(ready, **changes))
    text = page.content.decode()
    assert page.status_code == 200 and "nothing was requested" in text and shown in text
    assert 'value="support-tone"' in text  # what was typed stays
    assert not FineTuneRun.objects.exists() and not ApprovalRequest.objects.filter(subject_type="fine_tune_run")
    assert Entry.objects.count() == start


@pytest.mark.usefixtures("staging_policies")
def test_an_engineer_requests_a_deployment_and_its_approval(ready: dict[str, Any]) -> None:
    client = _client(ready["ml_engineer"])
    assert "Request a deployment" in client.get(DEPLOYMENT_ADD).content.decode()
    start = Entry.objects.count()
    answer = client.post(DEPLOYMENT_ADD, _deployment_form(ready), follow=True)
    deployment = Deployment.objects.get()
    assert answer.redirect_chain[-1][0] == f"/admin/serving/deployment/{deployment.pk}/change/"
    approval = ApprovalRequest.objects.get(subject_type="deployment", subject_id=str(deployment.pk))
    [message] = [str(m) for m in answer.context["messages"]]
    assert (
        message == f"Deployment #{deployment.pk} requested; approval request #{approval.pk} waits for 1 platform admin."
    )
    assert deployment.environment == "staging" and deployment.guard == {
        "mode": "redact", "entities": ["EMAIL_ADDRESS", "PERSON"],
    }  # fmt: skip
    assert deployment.target["replicas"] == 1 and deployment.target["max_tokens"] == 64
    assert approval.action == "deployment.deploy" and approval.state == "pending"
    assert _actions_since(start) == ["deployment.requested", "approval.requested"]


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"gpu_count": "1", "gpu_type": ""}, "target.gpu_type: this platform has no GPU type"),
        ({"name": "Support Assistant"}, "Enter a valid"),
        ({"max_tokens": "100000"}, "target.max_tokens"),
    ],
)
def test_a_refused_deployment_request_is_explained_and_makes_nothing(
    ready: dict[str, Any], changes: dict[str, Any], shown: str
) -> None:
    client = _client(ready["ml_engineer"])
    start = Entry.objects.count()
    page = client.post(DEPLOYMENT_ADD, _deployment_form(ready, **changes))
    text = page.content.decode()
    assert page.status_code == 200 and "nothing was requested" in text and shown in text
    assert not Deployment.objects.exists() and Entry.objects.count() == start


def test_evidence_missing_at_submission_is_explained_and_makes_nothing(ready: dict[str, Any]) -> None:
    # The shipped staging rule asks for a recent security scan of the weights, which has none.
    start = Entry.objects.count()
    text = _client(ready["ml_engineer"]).post(DEPLOYMENT_ADD, _deployment_form(ready)).content.decode()
    assert "nothing was requested" in text and "no security scan under profile" in text
    assert not Deployment.objects.exists() and Entry.objects.count() == start


def test_without_the_ml_engineer_role_there_is_no_request_page(ready: dict[str, Any]) -> None:
    client = _client(ready["data_steward"])
    assert client.get(RUN_ADD).status_code == 403
    assert client.post(DEPLOYMENT_ADD, _deployment_form(ready)).status_code == 403
    assert not Deployment.objects.exists()
    assert 'href="/admin/training/finetunerun/add/"' not in client.get("/admin/").content.decode()
