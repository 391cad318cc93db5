"""A high-risk AI system whose production deployment the policy holds back until its extra
approvals and its evidence exist, through the services and the real approval path; a minimal-risk
system's deployment follows the ordinary rule; a prohibited one is never deployed; a new class
changes the deployment's digest, so an earlier approval stops counting.

The deployments run the shipped ``deployment.deploy`` rules with the model audits' evidence taken
out (a garak scan and a bias evaluation of their own are tested in audits/checks): the rules'
``when``, approvals, the ``ai_system_classified`` evidence and the training-data evidence stay as
shipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from audits.ledger.models import Entry
from common.errors import DomainError
from conftest import ROOT
from governance.models import ApprovalRequest
from governance.policy import load_policy_set
from governance.roles import Role
from governance.selectors import approval_holds
from governance.services import approval_request_decide, approval_request_submit, project_role_grant
from serving.models import DeploymentState
from serving.rules import deployment_digest
from serving.services import deployment_request
from systems.models import AISystem
from tests.test_ai_systems import answers
from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)

MODEL_AUDITS = ("security_scan_passed", "bias_within_bounds", "quantisation_within_bounds")
HIGH_RULE = {"environment": "production", "risk_class": "high"}
ORDINARY_RULE = {"environment": "production"}


@pytest.fixture
def policies(tmp_path: Path, settings: Any) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    policy = folder / "deployment.deploy.yaml"
    lines = policy.read_text().splitlines(keepends=True)
    policy.write_text("".join(line for line in lines if not any(check in line for check in MODEL_AUDITS)))
    settings.POLICY_DIR = folder
    return folder


@pytest.fixture
def cast(ready: dict[str, Any], policies: Path) -> dict[str, Any]:  # noqa: F811
    users = get_user_model().objects
    for role in (Role.SECURITY_REVIEWER, Role.FAIRNESS_REVIEWER):
        user = users.create_user(username=role.value.replace("_", "-"))
        project_role_grant(actor=ready["system"], project=ready["project"], user=user, role=role, reason="setup")
        ready[role.value] = users.get(pk=user.pk)
    return ready


def system_of_class(cast: dict[str, Any], slug: str, approvers: tuple[str, ...] = ("compliance_officer",),
                    **given: Any) -> AISystem:  # fmt: skip
    from systems.services import ai_system_classification_create, ai_system_classification_submit, ai_system_register

    system = ai_system_register(
        actor=cast["ml_engineer"], project=cast["project"], slug=slug, name=slug, purpose="ranks job applications",
        owner=cast["compliance_officer"], deployers=["HR department"], description="a fine-tuned ranker",
        human_oversight="a recruiter reviews every ranking and may stop the system",
    )  # fmt: skip
    classification = ai_system_classification_create(actor=cast["ml_engineer"], system=system, answers=answers(**given))
    request = ai_system_classification_submit(actor=cast["ml_engineer"], classification=classification)
    for approver in approvers:
        approval_request_decide(actor=cast[approver], request_id=request.pk, decision="approve", reason="classified")
    system.refresh_from_db()
    return system


def deploy_request(cast: dict[str, Any], system: AISystem | None, name: str = "ranker") -> Any:
    return deployment_request(
        actor=cast["ml_engineer"], model_version=cast["base"], name=name, environment="production",
        target={"max_tokens": 16}, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS"]},
        ai_system=system.slug if system else None,
    )  # fmt: skip


def submit(cast: dict[str, Any], deployment: Any) -> ApprovalRequest:
    return approval_request_submit(
        actor=cast["ml_engineer"], subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy"
    )


def decide(cast: dict[str, Any], request: ApprovalRequest, *approvers: str) -> ApprovalRequest:
    for approver in approvers:
        approval_request_decide(actor=cast[approver], request_id=request.pk, decision="approve", reason="ok")
    return ApprovalRequest.objects.get(pk=request.pk)


def test_shipped_policy_puts_the_high_risk_rule_first() -> None:
    from governance.evidence import known_checks
    from governance.subjects import subject_actions

    shipped = load_policy_set(ROOT / "policies", known_checks(), set(subject_actions()))
    rule = lambda **context: shipped.rule_for("deployment.deploy", {"project": "p", **context}).when  # noqa: E731
    assert rule(environment="production", risk_class="high") == HIGH_RULE
    for other in ({}, {"risk_class": "minimal"}, {"risk_class": "limited"}):  # no system, or not high-risk
        assert rule(environment="production", **other) == ORDINARY_RULE
    assert rule(environment="staging", risk_class="high") == {"environment": "staging"}
    high = shipped.rule_for("deployment.deploy", {"project": "p", **HIGH_RULE})
    assert {s.role.value for s in high.slots} == {
        "platform_admin", "compliance_officer", "security_reviewer", "fairness_reviewer",
    }  # fmt: skip
    assert "ai_system_classified" in high.evidence
    assert all("ai_system_classified" in r.evidence for r in shipped.policies["deployment.deploy"].rules)


def test_a_high_risk_system_is_held_back_until_its_extra_approvals_exist(cast: dict[str, Any]) -> None:
    system = system_of_class(cast, "hiring", annex_iii_areas=["employment"])
    assert system.risk_class == "high"
    deployment = deploy_request(cast, system)
    assert deployment.ai_system_id == system.pk
    requested = json.loads(bytes(Entry.objects.filter(action="deployment.requested").last().body))["payload"]
    assert requested["ai_system"] == str(system.pk) and requested["risk_class"] == "high"

    request = submit(cast, deployment)
    assert request.rule["when"] == HIGH_RULE and request.context["risk_class"] == "high"
    evidence = json.loads(bytes(Entry.objects.filter(action="approval.requested").last().body))["payload"]["evidence"]
    assert any(o["check"] == "ai_system_classified" and o["holds"] for o in evidence), evidence
    # The ordinary production approvals (platform admin, compliance officer) are not enough.
    request = decide(cast, request, "platform-admin", "compliance_officer")
    deployment.refresh_from_db()
    assert request.state == "pending" and deployment.state == DeploymentState.REQUESTED
    # With the security and fairness reviewers' approvals it is approved and starts.
    request = decide(cast, request, "security_reviewer", "fairness_reviewer")
    deployment.refresh_from_db()
    assert request.state == "approved" and deployment.state == DeploymentState.STARTING
    actions = Entry.objects.filter(subject_type="deployment", subject_id=str(deployment.pk)).values_list("action")
    assert ("deployment.requested",) in actions
    assert approval_holds(subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy",
                          digest=deployment_digest(deployment))  # fmt: skip

    # A new approved class changes the digest: the approval given under the old class stops counting.
    before = deployment_digest(deployment)
    system_of_class_again = _reclassify(cast, system, interacts_with_people=True)
    assert system_of_class_again.risk_class == "limited"
    deployment.refresh_from_db()
    assert deployment_digest(deployment) != before
    assert not approval_holds(subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy",
                              digest=deployment_digest(deployment))  # fmt: skip


def _reclassify(cast: dict[str, Any], system: AISystem, **given: Any) -> AISystem:
    from systems.services import ai_system_classification_create, ai_system_classification_submit

    classification = ai_system_classification_create(actor=cast["ml_engineer"], system=system, answers=answers(**given))
    request = ai_system_classification_submit(actor=cast["ml_engineer"], classification=classification)
    decide(cast, request, "compliance_officer")
    system.refresh_from_db()
    return system


def test_the_high_risk_evidence_needs_the_register_complete(cast: dict[str, Any]) -> None:
    from systems.services import ai_system_update

    system = system_of_class(cast, "hiring", annex_iii_areas=["employment"])
    ai_system_update(actor=cast["compliance_officer"], system=system, human_oversight="")
    deployment = deploy_request(cast, system)
    with pytest.raises(DomainError) as refused:
        submit(cast, deployment)
    assert refused.value.status_code == 422 and "ai_system_classified" in refused.value.message
    assert "human oversight" in refused.value.message
    assert not ApprovalRequest.objects.filter(subject_type="deployment").exists()


def test_minimal_follows_the_ordinary_rule_and_prohibited_is_never_deployed(cast: dict[str, Any]) -> None:
    minimal = system_of_class(cast, "faq", uses_gpai_model=True)
    assert minimal.risk_class == "minimal"
    request = submit(cast, deploy_request(cast, minimal))
    assert request.rule["when"] == ORDINARY_RULE and request.context["risk_class"] == "minimal"
    assert decide(cast, request, "platform-admin", "compliance_officer").state == "approved"

    # No system: the ordinary rule, as before the register existed.
    request = submit(cast, deploy_request(cast, None, name="plain"))
    assert request.rule["when"] == ORDINARY_RULE and "risk_class" not in request.context

    banned = system_of_class(cast, "scoring", ("compliance_officer", "platform-admin"), social_scoring=True)
    assert banned.risk_class == "prohibited"
    unclassified = system_of_class(cast, "draft", ())
    from governance.services import project_create
    from systems.services import ai_system_register

    other = project_create(actor=cast["system"], slug="elsewhere", name="Elsewhere")
    foreign = ai_system_register(
        actor=cast["system"], project=other, slug="foreign", name="f", purpose="p", owner=cast["system"]
    )
    for system, words in ((banned, "prohibited practice"), (unclassified, "no approved risk classification"),
                          (foreign, "no AI system")):  # fmt: skip
        count = Entry.objects.count()
        with pytest.raises(DomainError) as refused:
            deploy_request(cast, system, name=f"try-{system.slug}")
        assert "ai_system" in refused.value.fields and words in refused.value.message, refused.value.message
        assert Entry.objects.count() == count
