"""Preference pairs from feedback: the pairing rules (pure), the export request's refusals, an
export with nothing to pair failing on record, and the bound on a rater's correction."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from audits.ledger.models import Entry
from common.errors import DomainError
from governance.services import approval_request_decide
from registry.models import DatasetVersion
from registry.tests.conftest import make_dataset
from serving.grants import GrantError, check_statement
from serving.models import DeploymentState
from serving.services import deployment_feedback_give
from serving.services.preference import (
    Rating,
    Turn,
    deployment_feedback_export_request,
    deployment_feedback_export_run,
    preference_pairs,
)
from serving.tests.deploying import actions, approve, put, request, served
from training.tests.conftest import elsewhere  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.django_db


def _turn(request_id: str, prompt: str, completion: str, deployment: int = 1) -> Turn:
    return Turn(request_id, deployment, f"2025-01-01T00:00:0{request_id[-1]}.000Z", prompt, completion)


def test_pairs_from_corrections_and_from_one_prompt_rated_apart() -> None:
    turns = {
        "r1": _turn("r1", "mail <EMAIL_ADDRESS>", "no"),
        "r2": _turn("r2", "where is it", "in the depot", deployment=2),
        "r3": _turn("r3", "where is it", "gone"),
        "r4": _turn("r4", "where is it", "in the depot"),  # same answer as r2: no pair between them
        "r5": _turn("r5", "hello", "hi"),
    }
    ratings = [
        Rating(1, "r1", 1, "  I will write to you.  "),
        Rating(2, "r2", 5, ""),
        Rating(3, "r3", 2, ""),  # low, but no correction: only the ranking uses it
        Rating(4, "r3", 1, ""),
        Rating(5, "r4", 4, ""),
        Rating(6, "r5", 5, "a better hi"),  # a high rating's correction is no pair
        Rating(7, "gone", 1, "no transcript"),  # no transcript: left out
    ]
    pairs, provenance = preference_pairs(turns, ratings)
    assert pairs == [
        {"prompt": "mail <EMAIL_ADDRESS>", "chosen": "I will write to you.", "rejected": "no"},
        {"prompt": "where is it", "chosen": "in the depot", "rejected": "gone"},
    ]
    assert provenance["by_rule"] == {"correction": 1, "ranking": 1}
    assert provenance["feedback"] == [1, 2, 3, 4, 5] and provenance["requests"] == 4
    assert provenance["deployments"] == [1, 2]
    assert provenance["window"] == {"from": "2025-01-01T00:00:01.000Z", "to": "2025-01-01T00:00:04.000Z"}
    assert preference_pairs(turns, [Rating(2, "r2", 3, ""), Rating(5, "r4", 3, "")])[0] == []
    nothing = {"pairs": 0, "by_rule": {"correction": 0, "ranking": 0}, "requests": 0, "feedback": [],
               "deployments": [], "window": None}  # fmt: skip
    assert preference_pairs({}, ratings) == ([], nothing)


def test_a_grant_carries_keep_transcripts_only_as_a_boolean() -> None:
    statement = {
        "grant_id": "g", "deployment": 1, "environment": "staging", "model_version": 1,
        "weights_digest": "sha256:" + "0" * 64, "runtime": "transformers",
        "target": {"gpu_type": "", "gpu_count": 0, "replicas": 1, "max_batch": 1, "max_tokens": 8,
                   "max_prompt_chars": 10},
        "guard": {"mode": "off", "entities": []}, "issued_at": "2025-01-01T00:00:00Z",
        "expires_at": "2025-01-02T00:00:00Z",
    }  # fmt: skip
    check_statement(statement)
    check_statement({**statement, "keep_transcripts": True})
    with pytest.raises(GrantError, match="keep_transcripts must be true or false"):
        check_statement({**statement, "keep_transcripts": "yes"})


def test_export_request_refusals_and_an_export_with_nothing_to_pair(
    ready: dict[str, Any],
    staging_policies: Any,
    own_serving_root: Any,
    elsewhere: dict[str, Any],  # noqa: F811
) -> None:
    plain = put(approve(ready, request(ready)), state=DeploymentState.LIVE)
    dataset = make_dataset(ready, slug="preferences")
    with pytest.raises(DomainError) as refused:
        deployment_feedback_export_request(actor=ready["ml_engineer"], deployment=plain, dataset=dataset)
    assert refused.value.code == "no_transcripts"
    with pytest.raises(DomainError) as refused:
        deployment_feedback_export_request(actor=ready["auditor"], deployment=plain, dataset=dataset)
    assert refused.value.code == "permission_denied"

    kept = request(ready, name="kept", keep_transcripts=True)
    assert json.loads(bytes(Entry.objects.get(action="deployment.requested", subject_id=str(kept.pk)).body))[
        "payload"]["keep_transcripts"] is True  # fmt: skip
    with pytest.raises(DomainError) as refused:
        request(ready, name="odd", keep_transcripts="yes")
    assert refused.value.code == "invalid_input" and "keep_transcripts" in refused.value.fields
    kept = put(approve(ready, kept), state=DeploymentState.LIVE)
    other = elsewhere["dataset_version"].dataset
    with pytest.raises(DomainError) as refused:
        deployment_feedback_export_request(actor=ready["ml_engineer"], deployment=kept, dataset=other)
    assert refused.value.code == "invalid_input" and "dataset" in refused.value.fields

    # Feedback on a request without a transcript, and a correction over the bound.
    request_id = uuid.uuid4()
    served(kept, request_id)
    with pytest.raises(DomainError) as refused:
        deployment_feedback_give(actor=ready["ml_engineer"], deployment=kept, request_id=str(request_id), rating=1,
                                 category="incorrect", correction="x" * 4001)  # fmt: skip
    assert refused.value.code == "invalid_input" and "correction" in refused.value.fields
    deployment_feedback_give(actor=ready["ml_engineer"], deployment=kept, request_id=str(request_id), rating=1,
                             category="incorrect", correction="a better answer")  # fmt: skip

    export = deployment_feedback_export_request(actor=ready["ml_engineer"], deployment=kept, dataset=dataset)
    approval_request_decide(actor=ready["data_steward"], request_id=export.pk, decision="approve", reason="ok")
    assert deployment_feedback_export_run(deployment_id=kept.pk, approval_request_id=export.pk) is None
    assert not DatasetVersion.objects.filter(dataset=dataset).exists()
    assert actions(kept)[-3:] == ["approval.requested", "approval.approved", "deployment.feedback_export_failed"]
    failed = json.loads(bytes(Entry.objects.get(action="deployment.feedback_export_failed").body))["payload"]
    assert failed["code"] == "no_pairs" and failed["approval_request"] == export.pk
    # Delivered again: answered already, nothing more on record.
    assert deployment_feedback_export_run(deployment_id=kept.pk, approval_request_id=export.pk) is None
    assert Entry.objects.filter(action="deployment.feedback_export_failed").count() == 1
