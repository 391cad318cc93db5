"""Separation of duties holds across service accounts: a service account with an owner counts as
its owner, so neither submits for the other to approve, nor do both fill two slots of one
request; break-glass follows the same rule. A project's platform admin grants no role to
themselves or their own service accounts. A request whose subject changed can be rejected (and
a new one submitted) instead of blocking the subject until it expires."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from governance.models import ApprovalState
from governance.roles import Role
from governance.services import (
    PolicyViolation,
    approval_break_glass,
    approval_request_decide,
    approval_request_submit,
    project_role_grant,
    service_account_create,
)
from registry.models import DatasetVersion
from tests.test_approvals import ACTION, _submit, _version

pytestmark = pytest.mark.django_db


def _account(people: dict[str, Any], name: str, owner: Any, *roles: Role) -> Any:
    account = service_account_create(actor=people["system"], username=name, owner=owner).user
    for role in roles:
        project_role_grant(actor=people["system"], project=people["project"], user=account, role=role, reason="ci")
    return account


def _submit_as(user: Any, version: DatasetVersion) -> Any:
    return approval_request_submit(
        actor=user, subject_type="dataset_version", subject_id=str(version.pk), action=ACTION
    )


def test_the_owner_of_the_submitting_service_account_may_not_approve(people: dict[str, Any]) -> None:
    bot = _account(people, "ci-bot", people["data_steward"], Role.ML_ENGINEER)
    version = _version(people)
    request = _submit_as(bot, version)
    with pytest.raises(PolicyViolation, match="service account and its owner count as one person") as caught:
        approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    assert caught.value.code == "self_approval"


def test_a_service_account_may_not_approve_its_owners_request(people: dict[str, Any]) -> None:
    bot = _account(people, "engineer-bot", people["ml_engineer"], Role.DATA_STEWARD)
    request = _submit(people, _version(people))  # submitted by ml_engineer, the bot's owner
    with pytest.raises(PolicyViolation) as caught:
        approval_request_decide(actor=bot, request_id=request.pk, decision="approve", reason="ok")
    assert caught.value.code == "self_approval"
    request.refresh_from_db()
    assert request.state == ApprovalState.PENDING and not request.decisions.exists()


def test_an_owner_and_their_service_account_fill_one_slot_between_them(people: dict[str, Any]) -> None:
    bot = _account(people, "steward-bot", people["data_steward"], Role.COMPLIANCE_OFFICER)
    request = _submit(people, _version(people), risk_tier="high")  # data_steward and compliance_officer slots
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    with pytest.raises(PolicyViolation, match="one person fills one slot"):
        approval_request_decide(actor=bot, request_id=request.pk, decision="approve", reason="and compliance")
    with pytest.raises(PolicyViolation, match="already decided"):
        approval_break_glass(
            actor=_platform_admin_owning(people, bot), request_id=request.pk,
            justification="production incident: the steward's bot must not count twice",
        )  # fmt: skip


def _platform_admin_owning(people: dict[str, Any], bot: Any) -> Any:
    """The bot's owner made a platform admin too: break-glass by them counts as the bot's."""
    project_role_grant(
        actor=people["system"], project=people["project"], user=people["data_steward"], role=Role.PLATFORM_ADMIN,
        reason="on call",
    )  # fmt: skip
    return people["data_steward"]


def test_break_glass_refuses_the_owner_of_the_requesting_service_account(people: dict[str, Any]) -> None:
    admin = get_user_model().objects.create_user(username="on-call-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="on call")  # fmt: skip
    bot = _account(people, "admin-bot", admin, Role.ML_ENGINEER)
    version = _version(people)
    request = _submit_as(bot, version)
    with pytest.raises(PolicyViolation) as caught:
        approval_break_glass(actor=admin, request_id=request.pk, justification="the incident needs it right now")
    assert caught.value.code == "self_approval"


def test_a_project_platform_admin_grants_no_role_to_themselves_or_their_bots(people: dict[str, Any]) -> None:
    admin = get_user_model().objects.create_user(username="project-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="runs the project")  # fmt: skip
    bot = _account(people, "admin-own-bot", admin)
    for user in (admin, bot):
        with pytest.raises(PolicyViolation, match="does not grant roles to themselves") as caught:
            project_role_grant(actor=admin, project=people["project"], user=user, role=Role.COMPLIANCE_OFFICER,
                               reason="I will approve this myself")  # fmt: skip
        assert caught.value.code == "self_grant"
    other = get_user_model().objects.create_user(username="someone-else")
    project_role_grant(actor=admin, project=people["project"], user=other, role=Role.AUDITOR, reason="audit")


def test_a_request_whose_subject_changed_can_be_rejected_and_submitted_again(people: dict[str, Any]) -> None:
    version = _version(people)
    request = _submit(people, version)
    DatasetVersion.objects.filter(pk=version.pk).update(review="confirmed")  # as a later review would
    with pytest.raises(Exception, match="reject or withdraw this request"):
        approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    rejected = approval_request_decide(
        actor=people["data_steward"], request_id=request.pk, decision="reject", reason="the data changed since"
    )
    assert rejected.state == ApprovalState.REJECTED
    assert _submit(people, version).state == ApprovalState.PENDING


def test_whoever_uploaded_the_version_does_not_approve_its_use(people: dict[str, Any]) -> None:
    from django.test import override_settings

    from registry.models import PiiScan
    from registry.services import dataset_version_upload, pii_scan_run
    from registry.tests.conftest import make_dataset
    from tests.test_approvals import PATTERN_ONLY

    steward = people["data_steward"]
    project_role_grant(actor=people["system"], project=people["project"], user=steward, role=Role.ML_ENGINEER,
                       reason="uploads too")  # fmt: skip
    version, _ = dataset_version_upload(
        actor=steward, dataset=make_dataset(people, slug="own"), filename="t.jsonl", data=b'{"text": "hello"}\n'
    )
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    request = _submit(people, version)  # submitted by ml_engineer, uploaded by the steward
    with pytest.raises(PolicyViolation, match="whoever made the dataset_version never decides on it") as caught:
        approval_request_decide(actor=steward, request_id=request.pk, decision="approve", reason="my own data")
    assert caught.value.code == "self_approval"
    other = get_user_model().objects.create_user(username="second-steward")
    project_role_grant(actor=people["system"], project=people["project"], user=other, role=Role.DATA_STEWARD,
                       reason="checks others' data")  # fmt: skip
    approved = approval_request_decide(actor=other, request_id=request.pk, decision="approve", reason="ok")
    assert approved.state == ApprovalState.APPROVED


def _refusals() -> list[dict[str, Any]]:
    from tests.test_approvals import _entries

    return [entry["payload"] for entry in _entries(action="separation_of_duties.refused")]


def test_a_break_glass_refused_under_separation_of_duties_is_in_the_ledger(people: dict[str, Any]) -> None:
    admin = get_user_model().objects.create_user(username="on-call-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="on call")  # fmt: skip
    bot = _account(people, "admin-bot", admin, Role.ML_ENGINEER)
    request = _submit_as(bot, _version(people))
    with pytest.raises(PolicyViolation) as caught:
        approval_break_glass(actor=admin, request_id=request.pk, justification="the incident needs it right now")
    assert caught.value.code == "self_approval"
    request.refresh_from_db()
    assert request.state == ApprovalState.PENDING and not request.decisions.exists()
    [refusal] = _refusals()
    assert refusal["request"] == request.pk and refusal["code"] == "self_approval"
    assert refusal["path"] == "break_glass" and "not even break-glass" in refusal["message"]


def test_a_break_glass_refused_through_the_api_is_in_the_ledger(people: dict[str, Any], client: Any) -> None:
    from governance.services import api_token_create

    admin = get_user_model().objects.create_user(username="on-call-admin")
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN,
                       reason="on call")  # fmt: skip
    project_role_grant(actor=people["system"], project=people["project"], user=admin, role=Role.ML_ENGINEER,
                       reason="also engineers")  # fmt: skip
    request = _submit_as(admin, _version(people))
    token = api_token_create(actor=admin, user=admin, name="t")[1]
    answer = client.post(
        f"/api/v1/approvals/{request.pk}/break-glass", {"justification": "my own request, urgently needed"},
        content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}",
    )  # fmt: skip
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "self_approval"
    [refusal] = _refusals()
    assert refusal["request"] == request.pk and refusal["path"] == "break_glass"


def test_a_break_glass_review_refused_under_separation_of_duties_is_in_the_ledger(people: dict[str, Any]) -> None:
    from governance.models import BreakGlassReview
    from governance.services import break_glass_review_close

    admin = get_user_model().objects.create_user(username="on-call-admin")
    for role in (Role.PLATFORM_ADMIN, Role.COMPLIANCE_OFFICER):
        project_role_grant(actor=people["system"], project=people["project"], user=admin, role=role, reason="both")
    request = _submit(people, _version(people))
    approval_break_glass(actor=admin, request_id=request.pk, justification="production incident, steward away")
    review = BreakGlassReview.objects.get(request=request)
    with pytest.raises(PolicyViolation) as caught:
        break_glass_review_close(actor=admin, review_id=review.pk, outcome="upheld", note="I was right")
    assert caught.value.code == "self_review"
    review.refresh_from_db()
    assert review.closed_at is None
    [refusal] = _refusals()
    assert refusal["request"] == request.pk and refusal["code"] == "self_review"
    assert refusal["path"] == "break_glass_review"
