"""The "may decide" selector answers what the decision service would do: for every person and
request here, it says yes exactly when the service accepts an approval; its words name the rule
that stops the others; the inbox and the list of requests waiting for a person agree with it, in a
number of queries that does not grow with the requests."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from common.errors import DomainError
from governance.models import ApprovalRequest
from governance.roles import Role
from governance.selectors import approval_ids_waiting_for, approval_list, approval_may_decide
from governance.services import approval_request_decide, project_role_grant, service_account_create
from tests.decisions import training_request

pytestmark = pytest.mark.django_db


class _Undo(Exception):
    """Raised to roll a trial decision back."""


def _service_accepts(user: Any, request: ApprovalRequest) -> bool:
    """Would the decision service accept an approval by ``user`` now? Tried, then rolled back."""
    try:
        with transaction.atomic():
            approval_request_decide(actor=user, request_id=request.pk, decision="approve", reason="trial")
            raise _Undo
    except _Undo:
        return True
    except DomainError:
        return False


def _grant(people: dict[str, Any], username: str, role: Role) -> Any:
    user = get_user_model().objects.create_user(username=username)
    project_role_grant(actor=people["system"], project=people["project"], user=user, role=role, reason="test setup")
    return user


def _may(user: Any, request: ApprovalRequest) -> Any:
    return approval_may_decide(user=user, request=ApprovalRequest.objects.get(pk=request.pk))


def test_it_says_yes_exactly_when_the_service_accepts_and_says_why_not(people: dict[str, Any]) -> None:
    steward, officer, engineer, auditor = (people[r] for r in ("data_steward", "compliance_officer", "ml_engineer",
                                                              "auditor"))  # fmt: skip
    second_steward = _grant(people, "second-steward", Role.DATA_STEWARD)
    # A service account owned by the steward, holding the officer's role: the steward's party.
    robot = service_account_create(actor=people["system"], username="steward-robot", owner=steward).user
    project_role_grant(actor=people["system"], project=people["project"], user=robot, role=Role.COMPLIANCE_OFFICER,
                       reason="test setup")  # fmt: skip
    two_slots = training_request(people, risk_tier="high")
    one_slot = training_request(people)
    # The steward uploaded this version: whoever made the subject never decides on it.
    made_by_steward = training_request(people, uploader="data_steward")
    approval_request_decide(actor=steward, request_id=two_slots.pk, decision="approve", reason="clean")
    closed = training_request(people)
    approval_request_decide(actor=steward, request_id=closed.pk, decision="approve", reason="clean")

    requests = [two_slots, one_slot, made_by_steward, closed]
    users = [steward, second_steward, officer, engineer, auditor, robot]
    said = {(u.username, r.pk): _may(u, r) for u in users for r in requests}
    assert {key: bool(may) for key, may in said.items()} == {
        (u.username, r.pk): _service_accepts(u, r) for u in users for r in requests
    }
    why = {key: may.why for key, may in said.items()}
    assert why[("compliance-officer", two_slots.pk)] == "you would fill the compliance officer slot"
    assert said[("compliance-officer", two_slots.pk)].roles == ("compliance_officer",)
    assert why[("data-steward", two_slots.pk)] == "you have already decided on this request: one person fills one slot"
    assert why[("second-steward", two_slots.pk)] == "the data steward slot is already filled"
    assert why[("steward-robot", two_slots.pk)] == (
        "you have already decided on this request: one person fills one slot"
    )  # its owner filled a slot
    assert why[("ml-engineer", one_slot.pk)] == (
        "you made this request: a requester never decides on their own request"
    )
    assert why[("auditor", two_slots.pk)] == (
        "deciding needs the role of data steward or compliance officer in project assistant"
    )
    assert why[("compliance-officer", one_slot.pk)] == "deciding needs the role of data steward in project assistant"
    assert why[("data-steward", made_by_steward.pk)].startswith(
        "separation of duties: whoever made the dataset_version never decides on it"
    )
    assert why[("second-steward", closed.pk)] == "the request is approved"


def test_an_expired_request_waits_for_nobody(people: dict[str, Any]) -> None:
    from django.utils import timezone

    request = training_request(people)
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timezone.timedelta(minutes=1))
    may = _may(people["data_steward"], request)
    assert not may and may.why.startswith("the request expired at ")
    assert not _service_accepts(people["data_steward"], request)
    assert approval_ids_waiting_for(user=people["data_steward"]) == []


def test_what_waits_for_a_person_is_what_they_may_decide_in_flat_queries(people: dict[str, Any]) -> None:
    steward, officer = people["data_steward"], people["compliance_officer"]
    first = training_request(people, risk_tier="high")
    with CaptureQueriesContext(connection) as one:
        assert approval_ids_waiting_for(user=officer) == [first.pk]
    more = [training_request(people, risk_tier="high") for _ in range(4)]
    approval_request_decide(actor=steward, request_id=more[0].pk, decision="approve", reason="clean")
    approval_request_decide(actor=officer, request_id=more[1].pk, decision="approve", reason="clean")
    with CaptureQueriesContext(connection) as many:
        waiting = approval_ids_waiting_for(user=officer)
    assert sorted(waiting) == sorted([first.pk, more[0].pk, more[2].pk, more[3].pk])
    assert len(many.captured_queries) == len(one.captured_queries)
    for user in (steward, officer, people["ml_engineer"], people["auditor"]):
        expected = sorted(r.pk for r in ApprovalRequest.objects.all() if _may(user, r))
        assert sorted(approval_ids_waiting_for(user=user)) == expected
        assert sorted(approval_list(user=user, inbox=True).values_list("pk", flat=True)) == expected
    # The steward's slot is filled on more[0]: the steward no longer sees it, the officer does.
    assert more[0].pk not in approval_ids_waiting_for(user=steward)
