"""Who may create, list and revoke whose API tokens, per role, through the API and the admin.

The cast: one person per role in the project "assistant", a platform admin of another project
("outsider"), a global admin (a superuser) and anonymous. The tokens: each caller's own, a
colleague's (a person working in "assistant"), the CI service account's (working in
"assistant"), the steward's own service account's (working only in the other project) and the
superuser's. The expected table is written out below, row by row, and each surface is checked
against it: a token one may not manage is one the caller cannot see (404 on the API, missing from
the admin's list, 404 on its revoke page), and every change is one ledger entry naming the caller.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApiToken
from governance.roles import Role
from governance.services import api_token_create, project_create, project_role_grant, service_account_create

User = get_user_model()
pytestmark = pytest.mark.django_db

ROLES = [role.value for role in Role]
CALLERS = [*ROLES, "outsider", "superuser"]
HOLDERS = ["colleague", "ci-bot", "steward-bot", "root"]

# Caller -> the other accounts whose tokens they list and revoke (everyone revokes their own).
# A project's platform admin manages the people and service accounts working in it, never a global
# admin's; a service account's owner manages it wherever it works; nobody else manages anyone.
MANAGES: dict[str, set[str]] = {
    **{role: set() for role in ROLES},
    Role.PLATFORM_ADMIN.value: {"colleague", "ci-bot"},
    Role.DATA_STEWARD.value: {"steward-bot"},
    "outsider": {"steward-bot"},
    "superuser": set(HOLDERS),
}
SERVICE_ACCOUNTS = ["ci-bot", "steward-bot"]


def _entries(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(body)) for body in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]


@pytest.fixture
def cast(people: dict[str, Any]) -> dict[str, Any]:
    system, project = people["system"], people["project"]
    elsewhere = project_create(actor=system, slug="elsewhere", name="Elsewhere")
    who: dict[str, Any] = {
        role: people[role] for role in ("data_steward", "ml_engineer", "compliance_officer", "auditor")
    }
    for role in (Role.SECURITY_REVIEWER, Role.FAIRNESS_REVIEWER, Role.PLATFORM_ADMIN):
        who[role.value] = User.objects.create_user(username=role.value.replace("_", "-"))
        project_role_grant(actor=system, project=project, user=who[role.value], role=role, reason="setup")
    who["outsider"] = User.objects.create_user(username="outsider")
    project_role_grant(actor=system, project=elsewhere, user=who["outsider"], role=Role.PLATFORM_ADMIN, reason="x")
    who["superuser"] = User.objects.create_superuser(username="root")
    who["root"] = who["superuser"]
    who["colleague"] = User.objects.create_user(username="colleague")
    project_role_grant(actor=system, project=project, user=who["colleague"], role=Role.ML_ENGINEER, reason="x")
    who["ci-bot"] = service_account_create(actor=system, username="ci-bot").user
    project_role_grant(actor=system, project=project, user=who["ci-bot"], role=Role.ML_ENGINEER, reason="ci")
    who["steward-bot"] = service_account_create(actor=system, username="steward-bot", owner=who["data_steward"]).user
    project_role_grant(actor=system, project=elsewhere, user=who["steward-bot"], role=Role.ML_ENGINEER, reason="x")
    return {name: User.objects.get(pk=user.pk) for name, user in who.items()} | {"system": system}


def _tokens(cast: dict[str, Any], caller: str) -> dict[str, ApiToken]:
    """One live token of each holder, and the caller's own."""
    made = {holder: api_token_create(actor=cast["system"], user=cast[holder], name=holder)[0] for holder in HOLDERS}
    if caller != "superuser":  # the superuser's own is "root"
        made["own"] = api_token_create(actor=cast["system"], user=cast[caller], name="own")[0]
    else:
        made["own"] = made["root"]
    return made


def _session(user: Any) -> Client:
    client = Client()
    admin_login(client, user)
    return client


@pytest.mark.parametrize("caller", CALLERS)
def test_the_api_lists_and_revokes_the_tokens_of_those_one_manages(cast: dict[str, Any], caller: str) -> None:
    tokens, client = _tokens(cast, caller), _session(cast[caller])
    managed = MANAGES[caller]
    for holder in HOLDERS:
        username = cast[holder].get_username()
        listed = {t["prefix"] for t in client.get(f"/api/v1/tokens/?user={username}").json()["results"]}
        expected = holder in managed or cast[holder] == cast[caller]
        assert (tokens[holder].prefix in listed) is expected, (caller, holder)
    assert [t["prefix"] for t in client.get("/api/v1/tokens/").json()["results"]] == [tokens["own"].prefix]

    start = Entry.objects.count()
    for holder in [*HOLDERS, "own"]:
        token = tokens[holder]
        if token.user_id == cast[caller].pk and holder != "own":
            continue  # the superuser's own token, revoked as "own" below
        response = client.post(f"/api/v1/tokens/{token.prefix}/revoke")
        allowed = holder == "own" or holder in managed
        assert response.status_code == (200 if allowed else 404), (caller, holder, response.content)
        token.refresh_from_db()
        assert (token.revoked_at is not None) is allowed, (caller, holder)
    revoked = sorted(e["payload"]["user"] for e in _entries(start))
    assert all(
        e["action"] == "api_token.revoked" and e["actor"]["name"] == cast[caller].get_username()
        for e in _entries(start)
    )
    own_name = cast[caller].get_username()
    assert revoked == sorted({*(cast[h].get_username() for h in managed), own_name})


@pytest.mark.parametrize("caller", CALLERS)
def test_the_api_creates_service_account_tokens_for_their_managers_only(cast: dict[str, Any], caller: str) -> None:
    client = _session(cast[caller])
    for account in SERVICE_ACCOUNTS:
        start = Entry.objects.count()
        response = client.post(
            "/api/v1/tokens/",
            {"name": "deploy", "user": account, "expires_in_days": 7},
            content_type="application/json",
        )
        if account in MANAGES[caller]:
            assert response.status_code == 201, (caller, account, response.content)
            body = response.json()
            assert body["user"] == account and body["token"].startswith(f"gov_{body['prefix']}_")
            [entry] = _entries(start)
            assert (entry["action"], entry["actor"]["name"], entry["payload"]["user"]) == (
                "api_token.created", cast[caller].get_username(), account
            )  # fmt: skip
            auth = {"HTTP_AUTHORIZATION": f"Token {body['token']}"}
            assert Client().get("/api/v1/me", **auth).json()["username"] == account
        else:
            assert response.status_code == 400, (caller, account, response.content)
            assert list(response.json()["error"]["fields"]) == ["user"]
            assert Entry.objects.count() == start
    # A person's tokens are that person's to make, whoever asks.
    response = client.post("/api/v1/tokens/", {"name": "x", "user": "colleague"}, content_type="application/json")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["user"]
    assert not ApiToken.objects.filter(user=cast["colleague"]).exists()


def test_anonymous_and_tokens_make_no_tokens(cast: dict[str, Any]) -> None:
    body = {"name": "x", "user": "ci-bot"}
    assert Client().post("/api/v1/tokens/", body, content_type="application/json").status_code in (401, 403)
    _, token = api_token_create(actor=cast["system"], user=cast["platform_admin"], name="t")
    refused = Client().post(
        "/api/v1/tokens/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "session_required"
    assert Client().post("/api/v1/tokens/x/revoke").status_code in (401, 403)
    assert ApiToken.objects.count() == 1


@pytest.mark.parametrize("caller", CALLERS)
def test_the_admin_lists_revokes_and_creates_as_the_api_does(cast: dict[str, Any], caller: str) -> None:
    tokens, client = _tokens(cast, caller), _session(cast[caller])
    managed = MANAGES[caller]
    page = client.get("/admin/governance/apitoken/").content.decode()
    for holder in HOLDERS:
        mine = cast[holder] == cast[caller]
        assert (tokens[holder].prefix in page) is (holder in managed or mine), (caller, holder)
    start = Entry.objects.count()
    for holder in HOLDERS:
        token = tokens[holder]
        if cast[holder] == cast[caller]:
            continue
        response = client.post(f"/admin/governance/apitoken/{token.pk}/revoke/")
        token.refresh_from_db()
        assert response.status_code == (302 if holder in managed else 404), (caller, holder)
        assert (token.revoked_at is not None) is (holder in managed), (caller, holder)
    assert len(_entries(start)) == len(managed - {"root"} if caller == "superuser" else managed)

    # The add page offers the service accounts they manage, and makes their tokens.
    form = client.get("/admin/governance/apitoken/add/").content.decode()
    for account in SERVICE_ACCOUNTS:
        assert (f'value="{account}"' in form) is (account in managed), (caller, account)
        before = ApiToken.objects.filter(user=cast[account]).count()
        response = client.post(
            "/admin/governance/apitoken/add/", {"holder": account, "name": "deploy", "expires_in_days": 7}
        )
        made = ApiToken.objects.filter(user=cast[account]).count() - before
        assert response.status_code == 200 and made == (1 if account in managed else 0), (caller, account)
        if account in managed:
            assert f"New API token of {account}" in response.content.decode()
