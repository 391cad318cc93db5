"""Roles, projects, service accounts and API tokens."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.errors import PermissionDenied
from governance.models import ApiToken, Project
from governance.permissions import SYSTEM_USERNAME, has_project_role
from governance.roles import Role
from governance.services import (
    api_token_create,
    api_token_revoke,
    project_create,
    project_role_grant,
    project_role_revoke,
    service_account_create,
)

User = get_user_model()
pytestmark = pytest.mark.django_db


@pytest.fixture
def system() -> object:
    return User.objects.get(username=SYSTEM_USERNAME)


def _person(username: str) -> object:
    return User.objects.create_user(username=username, password=None)


def test_migrations_create_the_role_groups_and_the_system_account(system: object) -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {role.value for role in Role}
    assert not system.has_usable_password()
    assert hasattr(system, "service_account")


def test_roles_are_granted_per_project(system: object) -> None:
    alpha = project_create(actor=system, slug="alpha", name="Alpha")
    beta = project_create(actor=system, slug="beta", name="Beta")
    engineer = _person("eve")
    project_role_grant(actor=system, project=alpha, user=engineer, role=Role.ML_ENGINEER, reason="test setup")
    engineer = User.objects.get(pk=engineer.pk)  # fresh permission cache
    assert has_project_role(engineer, alpha, Role.ML_ENGINEER)
    assert not has_project_role(engineer, beta, Role.ML_ENGINEER)
    assert not has_project_role(engineer, alpha, Role.COMPLIANCE_OFFICER)
    assert engineer.groups.filter(name="ml_engineer").exists()


def test_only_platform_admins_create_projects_and_grant_roles(system: object) -> None:
    project = project_create(actor=system, slug="alpha", name="Alpha")
    mallory = _person("mallory")
    with pytest.raises(PermissionDenied):
        project_create(actor=mallory, slug="mine", name="Mine")
    with pytest.raises(PermissionDenied):
        project_role_grant(actor=mallory, project=project, user=mallory, role=Role.PLATFORM_ADMIN, reason="test setup")
    assert not Project.objects.filter(slug="mine").exists()
    assert not has_project_role(User.objects.get(pk=mallory.pk), project, Role.PLATFORM_ADMIN)


def test_tokens_are_stored_hashed_and_shown_once(system: object) -> None:
    bot = service_account_create(actor=system, username="ci-bot").user
    row, token = api_token_create(actor=system, user=bot, name="ci")
    assert token.startswith(f"gov_{row.prefix}_")
    stored = ApiToken.objects.get(pk=row.pk)
    assert token not in {stored.digest, stored.prefix, stored.name}
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM governance_apitoken")
        assert token not in repr(cursor.fetchall())
    assert not bot.has_usable_password()
    assert not bot.is_staff


def test_token_authentication(client: Client, system: object) -> None:
    bot = service_account_create(actor=system, username="ci-bot").user
    row, token = api_token_create(actor=system, user=bot, name="ci")
    ok = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}")
    assert ok.status_code == 200
    assert ok.json()["username"] == "ci-bot"
    assert ok.json()["kind"] == "service_account"
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200

    for bad in [token[:-1] + ("A" if token[-1] != "A" else "B"), "gov_nope_nope", "garbage", f"{token} extra"]:
        response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {bad}")
        assert response.status_code == 401, bad
        assert response.json()["error"]["code"] == "authentication_failed"
        assert response["WWW-Authenticate"] == "Token"

    api_token_revoke(actor=system, token=row)
    revoked = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}")
    assert revoked.status_code == 401

    _, expiring = api_token_create(
        actor=system, user=bot, name="short", expires_at=timezone.now() + timedelta(seconds=60)
    )
    ApiToken.objects.filter(name="short").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {expiring}").status_code == 401


def test_anonymous_callers_get_401_with_the_error_shape(client: Client) -> None:
    response = client.get("/api/v1/projects/")
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "not_authenticated", "message": "Authentication credentials were not provided.", "fields": {}}
    }


def test_projects_are_visible_only_to_their_members(client: Client, system: object) -> None:
    alpha = project_create(actor=system, slug="alpha", name="Alpha")
    project_create(actor=system, slug="beta", name="Beta")
    auditor = _person("aud")
    project_role_grant(actor=system, project=alpha, user=auditor, role=Role.AUDITOR, reason="test setup")
    _, token = api_token_create(actor=auditor, user=auditor, name="laptop")
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    listing = client.get("/api/v1/projects/", **auth)
    assert [p["slug"] for p in listing.json()["results"]] == ["alpha"]
    assert client.get("/api/v1/projects/alpha", **auth).status_code == 200
    hidden = client.get("/api/v1/projects/beta", **auth)
    missing = client.get("/api/v1/projects/gamma", **auth)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    me = client.get("/api/v1/me", **auth).json()
    assert me["projects"] == [{"project": "alpha", "roles": ["auditor"]}]


def test_me_query_count_stays_flat_as_projects_grow(client: Client, system: object) -> None:
    person = _person("many")
    _, token = api_token_create(actor=system, user=person, name="t")
    client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}")  # records the token's first use

    def queries_with(n: int) -> int:
        for i in range(n):
            project = project_create(actor=system, slug=f"p{n}-{i}", name=f"P {i}")
            project_role_grant(actor=system, project=project, user=person, role=Role.ML_ENGINEER, reason="test setup")
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
        return len(ctx.captured_queries)

    assert queries_with(2) == queries_with(10)


def test_every_identity_change_is_in_the_ledger(system: object) -> None:
    from audits.ledger.models import Entry

    start = Entry.objects.count()
    project = project_create(actor=system, slug="alpha", name="Alpha")
    person = _person("led")
    project_role_grant(actor=system, project=project, user=person, role=Role.DATA_STEWARD, reason="test setup")
    project_role_revoke(actor=system, project=project, user=person, role=Role.DATA_STEWARD, reason="test setup")
    bot = service_account_create(actor=system, username="ci-bot").user
    row, token = api_token_create(actor=system, user=bot, name="ci")
    assert api_token_revoke(actor=system, token=row) is True
    assert api_token_revoke(actor=system, token=row) is False  # already revoked: no second entry
    entries = [json.loads(bytes(b)) for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]
    assert [(e["action"], e["subject"]["type"], e["actor"]["name"]) for e in entries] == [
        ("project.created", "project", "system"),
        ("project.role_granted", "project", "system"),
        ("project.role_revoked", "project", "system"),
        ("service_account.created", "user", "system"),
        ("api_token.created", "api_token", "system"),
        ("api_token.revoked", "api_token", "system"),
    ]
    assert entries[1]["payload"] == {
        "user": "led", "user_id": str(person.pk), "role": "data_steward", "reason": "test setup",
    }  # fmt: skip
    assert all(token not in json.dumps(e) for e in entries)  # the token never reaches the ledger


def test_a_refused_change_writes_no_entry(system: object) -> None:
    from audits.ledger.models import Entry

    start = Entry.objects.count()
    with pytest.raises(PermissionDenied):
        project_create(actor=_person("nobody"), slug="x", name="X")
    assert Entry.objects.count() == start


def test_a_role_change_needs_a_reason(system: object) -> None:
    from common.errors import DomainError

    project = project_create(actor=system, slug="alpha", name="Alpha")
    person = _person("why")
    for blank in ("", "  "):
        with pytest.raises(DomainError, match="needs a reason"):
            project_role_grant(actor=system, project=project, user=person, role=Role.AUDITOR, reason=blank)
    assert not has_project_role(User.objects.get(pk=person.pk), project, Role.AUDITOR)


def test_revoking_the_last_grant_of_a_role_takes_its_group_and_staff_status(client: Client, system: object) -> None:
    from audits.ledger.models import Entry
    from common.errors import Conflict

    alpha = project_create(actor=system, slug="alpha", name="Alpha")
    beta = project_create(actor=system, slug="beta", name="Beta")
    person = _person("aud")
    for project in (alpha, beta):
        project_role_grant(actor=system, project=project, user=person, role=Role.AUDITOR, reason="test setup")
    project_role_grant(actor=system, project=alpha, user=person, role=Role.ML_ENGINEER, reason="test setup")
    auth = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=system, user=person, name='t')[1]}"}
    assert client.get("/api/v1/ledger/entries/", **auth).status_code == 200

    project_role_revoke(actor=system, project=alpha, user=person, role=Role.AUDITOR, reason="left alpha")
    person = User.objects.get(pk=person.pk)
    assert person.is_staff and person.groups.filter(name="auditor").exists()  # still an auditor of beta
    project_role_revoke(actor=system, project=beta, user=person, role=Role.AUDITOR, reason="left beta")
    person = User.objects.get(pk=person.pk)
    assert not person.groups.filter(name="auditor").exists()
    assert person.groups.filter(name="ml_engineer").exists() and person.is_staff  # the role still held stays
    assert not person.has_perm("ledger.view_entry")
    assert client.get("/api/v1/ledger/entries/", **auth).status_code == 403
    project_role_revoke(actor=system, project=alpha, user=person, role=Role.ML_ENGINEER, reason="left alpha")
    assert not User.objects.get(pk=person.pk).is_staff  # no role left that works in the admin

    start = Entry.objects.count()
    with pytest.raises(Conflict) as caught:
        project_role_revoke(actor=system, project=beta, user=person, role=Role.AUDITOR, reason="again")
    assert caught.value.code == "role_not_held" and "does not hold auditor in beta" in caught.value.message
    assert Entry.objects.count() == start
