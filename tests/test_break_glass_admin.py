"""Break-glass reviews in the admin: a compliance officer closes one with an outcome and a note
through the same service as the API (ledgered); the admin who broke the glass is refused
(separation of duties) and nothing changes; a blank note changes nothing; auditors read without
the action."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import BreakGlassReview
from governance.roles import Role
from governance.services import approval_break_glass, project_role_grant
from tests.test_approvals import _submit, _version

LIST = "/admin/governance/breakglassreview/"
WHY = "outage: the fraud model must be retrained tonight"


def _review(people: dict[str, Any], *admin_roles: Role) -> tuple[BreakGlassReview, Any]:
    admin_user = get_user_model().objects.create_user(username="on-call-admin")
    for role in (Role.PLATFORM_ADMIN, *admin_roles):
        project_role_grant(
            actor=people["system"], project=people["project"], user=admin_user, role=role, reason="on call"
        )
    request = approval_break_glass(actor=admin_user, request_id=_submit(people, _version(people)).pk, justification=WHY)
    return request.break_glass, admin_user


def _close(client: Client, review: BreakGlassReview, **fields: str) -> Any:
    data = {"action": "close_reviews", "_selected_action": [review.pk], "apply": "1", **fields}
    return client.post(LIST, data, follow=True)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
def test_an_officer_closes_a_review_in_the_admin_and_the_ledger_keeps_the_note(people: dict[str, Any]) -> None:
    review, _ = _review(people)
    client = Client()
    admin_login(client, people["compliance_officer"])
    listing = client.get(LIST)
    assert listing.status_code == 200 and b"close_reviews" in listing.content
    confirm = client.post(LIST, {"action": "close_reviews", "_selected_action": [review.pk]})
    assert confirm.status_code == 200 and b"Close 1 break-glass review(s)" in confirm.content
    assert f"Request #{review.request_id}".encode() in confirm.content

    before = Entry.objects.count()
    blank = _close(client, review, outcome="upheld", note="  ")
    assert b"This field is required." in blank.content or b"may not be blank" in blank.content
    assert Entry.objects.count() == before and BreakGlassReview.objects.get(pk=review.pk).closed_at is None

    done = _close(client, review, outcome="upheld", note="the incident ticket shows the outage")
    assert any("closed as upheld" in m for m in _messages(done))
    review.refresh_from_db()
    assert (review.outcome, review.closed_by, review.note) == (
        "upheld", people["compliance_officer"], "the incident ticket shows the outage"
    )  # fmt: skip
    written = [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=before)]
    assert [(e["action"], e["payload"]["outcome"], e["payload"]["note"]) for e in written] == [
        ("approval.break_glass_reviewed", "upheld", "the incident ticket shows the outage")
    ]


@pytest.mark.django_db
def test_the_admin_who_broke_the_glass_may_not_close_its_review(people: dict[str, Any]) -> None:
    review, admin_user = _review(people, Role.COMPLIANCE_OFFICER)
    client = Client()
    admin_login(client, admin_user)
    before = Entry.objects.count()
    refused = _close(client, review, outcome="upheld", note="it was me, and it was fine")
    assert any("separation of duties" in m for m in _messages(refused)), _messages(refused)
    assert BreakGlassReview.objects.get(pk=review.pk).closed_at is None
    # The refusal is the one entry the attempt leaves: nothing of the close survives it.
    added = [json.loads(bytes(body)) for body in Entry.objects.filter(index__gte=before).values_list("body", flat=True)]
    assert [(e["action"], e["payload"]["path"]) for e in added] == [
        ("separation_of_duties.refused", "break_glass_review")
    ]


@pytest.mark.django_db
def test_an_auditor_reads_the_reviews_without_the_action(people: dict[str, Any]) -> None:
    review, _ = _review(people)
    client = Client()
    admin_login(client, people["auditor"])
    listing = client.get(LIST)
    assert listing.status_code == 200 and f"#{review.request_id}".encode() in listing.content
    assert b"close_reviews" not in listing.content
    before = Entry.objects.count()
    client.post(LIST, {"action": "close_reviews", "_selected_action": [review.pk], "apply": "1",
                       "outcome": "revoked", "note": "no"})  # fmt: skip
    assert Entry.objects.count() == before and BreakGlassReview.objects.get(pk=review.pk).closed_at is None
