"""A password set for someone else is a governed, ledgered change (issue 26, class 13)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.test import RequestFactory

from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from governance.services import service_account_create
from governance.services.passwords import user_password_set

User = get_user_model()
pytestmark = pytest.mark.django_db
GOOD = "violet-harbour-engine-42"


def _signs_in(username: str, password: str) -> bool:
    return authenticate(RequestFactory().post("/admin/login/"), username=username, password=password) is not None


def test_a_platform_admin_resets_a_password_and_the_ledger_records_it_without_the_password(
    people: dict[str, Any],
) -> None:
    admin, person = people["system"], people["auditor"]
    user_password_set(actor=admin, user=person, password=GOOD, reason="locked out, ticket 7")
    assert _signs_in(person.username, GOOD)
    entry = Entry.objects.get(action="user.password_set")
    assert (entry.actor_name, entry.subject_type, entry.subject_id) == (admin.username, "user", str(person.pk))
    body = bytes(entry.body).decode()
    assert "locked out, ticket 7" in body and GOOD not in body
    assert User.objects.get(pk=person.pk).password not in body


def test_refusals_name_the_problem_and_change_nothing(people: dict[str, Any]) -> None:
    admin, person = people["system"], people["auditor"]
    before = User.objects.get(pk=person.pk).password
    with pytest.raises(PermissionDenied, match="only a platform admin"):
        user_password_set(actor=people["ml_engineer"], user=person, password=GOOD, reason="x")
    with pytest.raises(DomainError, match="reason") as blank:
        user_password_set(actor=admin, user=person, password=GOOD, reason="  ")
    assert blank.value.fields == {"reason": ["may not be blank"]}
    with pytest.raises(DomainError, match="the password is refused") as weak:
        user_password_set(actor=admin, user=person, password="12345", reason="reset")
    assert "password" in weak.value.fields
    robot = service_account_create(actor=admin, username="ci-robot").user
    with pytest.raises(DomainError, match="signs in by API token"):
        user_password_set(actor=admin, user=robot, password=GOOD, reason="reset")
    assert User.objects.get(pk=person.pk).password == before
    assert not Entry.objects.filter(action="user.password_set").exists()
