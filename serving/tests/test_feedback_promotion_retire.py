"""Auditors give no feedback, retiring a requested deployment withdraws its pending approval
request, one open promotion per configuration, and feedback only on requests the deployment
served."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from audits.ledger.models import Entry
from common.errors import Conflict, DomainError, PermissionDenied
from common.testing import admin_login
from conftest import ROOT
from governance.models import ApprovalRequest, ApprovalState
from governance.services import approval_request_decide, approval_request_submit
from serving import services
from serving.models import Deployment, DeploymentState, InferenceFeedback
from serving.services import deployment_promote, deployment_retire
from serving.tests import deploying

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_serving_root")]


@pytest.fixture
def light_policies(tmp_path: Path, settings: Any) -> Path:
    """Both environments ask for one platform admin and the training-data evidence only: the
    production rule's scans and evaluations are not what these tests are about."""
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    rule = (
        "    approvals:\n      - {role: platform_admin, count: 1}\n"
        "    evidence: [training_data_approved]\n    expires_after_days: 30\n"
    )
    (folder / "deployment.deploy.yaml").write_text(
        "action: deployment.deploy\ndescription: light, for tests\nrules:\n"
        f"  - when: {{environment: production}}\n{rule}  - when: {{environment: staging}}\n{rule}"
    )
    settings.POLICY_DIR = folder
    return folder


def _feedback_entries() -> int:
    return Entry.objects.filter(action="deployment.feedback").count()


# --- 1. Auditors are read-only ---------------------------------------------------------------------


def test_an_auditor_may_not_give_feedback(ready: dict[str, Any]) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    request_id = uuid.uuid4()
    deploying.served(deployment, request_id)
    before = _feedback_entries()
    with pytest.raises(PermissionDenied) as refused:
        services.deployment_feedback_give(
            actor=ready["auditor"], deployment=deployment, request_id=str(request_id), rating=1, category="harmful"
        )
    assert refused.value.status_code == 403 and refused.value.code == "permission_denied"
    assert "ml_engineer" in refused.value.message and "auditor" in refused.value.message
    assert _feedback_entries() == before and not InferenceFeedback.objects.exists()


def test_an_auditor_gets_403_from_the_feedback_endpoint(ready: dict[str, Any], client: Any) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    request_id = uuid.uuid4()
    deploying.served(deployment, request_id)
    admin_login(client, ready["auditor"])
    answer = client.post(
        f"/api/v1/deployments/{deployment.pk}/feedback",
        {"request_id": str(request_id), "rating": 2, "category": "incorrect"}, content_type="application/json",
    )  # fmt: skip
    assert answer.status_code == 403, answer.content
    assert answer.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("role", ["ml_engineer", "data_steward", "compliance_officer", "platform-admin"])
def test_other_project_roles_still_give_feedback(ready: dict[str, Any], role: str) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    request_id = uuid.uuid4()
    deploying.served(deployment, request_id)
    feedback = services.deployment_feedback_give(
        actor=ready[role], deployment=deployment, request_id=str(request_id), rating=4, category="helpful"
    )
    assert feedback.given_by == ready[role]
    assert deploying.actions(deployment)[-1] == "deployment.feedback"


# --- 2. Retiring a requested deployment withdraws its approval request -----------------------------


def test_retiring_a_requested_deployment_withdraws_its_pending_request(
    ready: dict[str, Any], staging_policies: Any
) -> None:
    deployment = deploying.request(ready)
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    # A project's platform admin, not the requester, retires it.
    deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="not needed after all")
    request.refresh_from_db()
    assert request.state == ApprovalState.WITHDRAWN and request.closed_at is not None
    assert deploying.actions(deployment)[-2:] == ["deployment.retired", "approval.withdrawn"]
    withdrawn = Entry.objects.get(subject_type="deployment", subject_id=str(deployment.pk), action="approval.withdrawn")
    payload = json.loads(bytes(withdrawn.body))["payload"]
    assert payload["request"] == request.pk and "retired" in payload["reason"]
    with pytest.raises(Conflict, match="withdrawn"):
        approval_request_decide(actor=ready["platform-admin"], request_id=request.pk, decision="approve", reason="ok")
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.RETIRED and not deployment.grants.exists()


def test_the_admin_retires_through_the_service_and_shows_and_logs_a_refusal(
    ready: dict[str, Any], staging_policies: Any, client: Any, security_events: list[dict[str, Any]]
) -> None:
    deployment = deploying.request(ready)
    admin_login(client, ready["platform-admin"])

    def retire() -> list[str]:
        response = client.post(
            "/admin/serving/deployment/", {"action": "retire", "_selected_action": [deployment.pk]}, follow=True
        )
        assert response.status_code == 200
        return [str(m) for m in response.context["messages"]]

    assert retire() == [f"deployment {deployment.pk}: retired"]
    assert deploying.actions(deployment)[-1] == "deployment.retired"
    assert retire() == [f"deployment {deployment.pk}: deployment {deployment.pk} is already retired"]
    assert deploying.actions(deployment).count("deployment.retired") == 1
    denied = [e for e in security_events if e["event"] == "request.denied"]
    assert [(e["deployment"], e["status"], e["reason"], e["user_id"]) for e in denied] == [
        (deployment.pk, 409, "deployment_retired", ready["platform-admin"].pk)
    ]


def test_a_refused_withdrawal_rolls_the_retirement_back(
    ready: dict[str, Any], staging_policies: Any, monkeypatch: Any
) -> None:
    """One transaction: when closing the request fails, the deployment is not retired either."""
    from governance.services import approvals

    deployment = deploying.request(ready)
    approval_request_submit(
        actor=ready["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk),
        action="deployment.deploy",
    )  # fmt: skip
    before = Entry.objects.count()

    def refuse(**kwargs: Any) -> Any:
        raise Conflict("request_closed", "closed meanwhile")

    monkeypatch.setattr(approvals, "approval_request_withdraw", refuse)
    with pytest.raises(Conflict):
        deployment_retire(actor=ready["platform-admin"], deployment=deployment, reason="not needed")
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.REQUESTED and Entry.objects.count() == before


# --- 3. One open promotion per configuration ------------------------------------------------------


def test_a_second_promotion_of_the_same_staging_deployment_is_refused(
    ready: dict[str, Any], light_policies: Any
) -> None:
    staging = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    first = deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    before = Entry.objects.count()
    with pytest.raises(Conflict) as refused:
        deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    assert refused.value.code == "already_promoted" and refused.value.status_code == 409
    assert f"production deployment {first.pk}" in refused.value.message
    assert Deployment.objects.filter(environment="production").count() == 1
    assert ApprovalRequest.objects.filter(subject_type="deployment").count() == 1
    assert Entry.objects.count() == before


def test_promotion_is_refused_while_the_production_twin_is_live(ready: dict[str, Any], light_policies: Any) -> None:
    staging = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    first = deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    deploying.put(first, state=DeploymentState.LIVE)
    with pytest.raises(Conflict, match=f"production deployment {first.pk}"):
        deployment_promote(actor=ready["ml_engineer"], deployment=staging)


def test_promotion_is_allowed_again_once_the_twin_is_retired(ready: dict[str, Any], light_policies: Any) -> None:
    staging = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    first = deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    deployment_retire(actor=ready["platform-admin"], deployment=first, reason="asked too early")
    second = deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    assert second.pk != first.pk and second.state == DeploymentState.REQUESTED
    assert ApprovalRequest.objects.get(subject_id=str(second.pk)).state == ApprovalState.PENDING


def test_another_configuration_of_the_same_name_may_be_promoted(ready: dict[str, Any], light_policies: Any) -> None:
    staging = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    deployment_promote(actor=ready["ml_engineer"], deployment=staging)
    other = deploying.put(
        deploying.request(ready, target={**deploying.TARGET, "max_tokens": 32}), state=DeploymentState.LIVE
    )
    promoted = deployment_promote(actor=ready["ml_engineer"], deployment=other)
    assert promoted.target["max_tokens"] == 32
    assert Deployment.objects.filter(environment="production").count() == 2


# --- 4. Feedback only on requests the deployment served --------------------------------------------


def test_feedback_on_a_request_the_deployment_never_served_is_refused(ready: dict[str, Any]) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    other = deploying.put(deploying.request(ready, name="other"), state=DeploymentState.LIVE)
    served, elsewhere = uuid.uuid4(), uuid.uuid4()
    deploying.served(deployment, served)
    deploying.served(other, elsewhere)
    before = _feedback_entries()
    for unknown in (uuid.uuid4(), elsewhere):
        with pytest.raises(DomainError) as refused:
            services.deployment_feedback_give(
                actor=ready["ml_engineer"], deployment=deployment, request_id=str(unknown), rating=3,
                category="other",
            )  # fmt: skip
        assert refused.value.code == "invalid_input" and refused.value.status_code == 400
        assert list(refused.value.fields) == ["request_id"] and str(unknown) in refused.value.message
    assert _feedback_entries() == before
    services.deployment_feedback_give(
        actor=ready["ml_engineer"], deployment=deployment, request_id=str(served), rating=3, category="other"
    )
    assert _feedback_entries() == before + 1


def test_feedback_on_a_deployment_without_a_log_is_refused(ready: dict[str, Any]) -> None:
    deployment = deploying.put(deploying.request(ready), state=DeploymentState.LIVE)
    with pytest.raises(DomainError) as refused:
        services.deployment_feedback_give(
            actor=ready["ml_engineer"], deployment=deployment, request_id=str(uuid.uuid4()), rating=3, category="other"
        )
    assert refused.value.code == "invalid_input" and "request_id" in refused.value.fields
