"""Helpers of the serving tests that drive deployments through the services without a server:
a request with the usual target and guard, the platform admin's approval, a state put as the
worker would have put it, the deployment's ledger actions and the lines of its inference log."""

from __future__ import annotations

import json
import uuid
from typing import Any

from audits.ledger.models import Entry
from governance.services import approval_request_decide, approval_request_submit
from serving.models import Deployment
from serving.selectors import inference_log_path
from serving.services import deployment_request

TARGET = {"max_tokens": 16, "max_prompt_chars": 500}
GUARD = {"mode": "redact", "entities": ["EMAIL_ADDRESS"]}


def request(ready: dict[str, Any], **overrides: Any) -> Deployment:
    arguments: dict[str, Any] = {
        "actor": ready["ml_engineer"], "model_version": ready["base"], "name": "assistant",
        "environment": "staging", "target": TARGET, "guard": GUARD,
    }  # fmt: skip
    arguments.update(overrides)
    return deployment_request(**arguments)


def approve(ready: dict[str, Any], deployment: Deployment) -> Deployment:
    submitted = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    approval_request_decide(actor=ready["platform-admin"], request_id=submitted.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    return deployment


def put(deployment: Deployment, **fields: Any) -> Deployment:
    """Put a deployment in a state the worker would have brought it to (no server runs here)."""
    Deployment.objects.filter(pk=deployment.pk).update(**fields)
    deployment.refresh_from_db()
    return deployment


def actions(deployment: Deployment) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="deployment", subject_id=str(deployment.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def served(deployment: Deployment, *request_ids: uuid.UUID) -> None:
    """Lines as the deployment's server writes them, one per request it answered."""
    path = inference_log_path(deployment)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        for request_id in request_ids:
            record = {"time": "2025-01-01T00:00:00.000Z", "request_id": str(request_id),
                      "deployment": deployment.pk, "status": 200, "latency_ms": 3.0, "guard": {}}  # fmt: skip
            log.write(json.dumps(record, separators=(",", ":")) + "\n")
