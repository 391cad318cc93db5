"""Self-service API tokens: the services' rules (an expiry bounded by API_TOKEN_MAX_DAYS, who
revokes whose) and the API (``/api/v1/tokens/``): created from a verified session only, shown
once, listed without the token, revoked; every change in the ledger."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.utils import timezone

from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from common.testing import admin_login
from governance.models import ApiToken
from governance.roles import Role
from governance.services import (
    api_token_create,
    api_token_create_own,
    api_token_revoke,
    project_create,
    project_role_grant,
    service_account_create,
)

User = get_user_model()
pytestmark = pytest.mark.django_db


def _entries(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(body)) for body in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]


def _token_auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


@pytest.fixture
def ci(people: dict[str, Any]) -> Any:
    """A CI service account working in the people's project as an ML engineer, owned by nobody."""
    account = service_account_create(actor=people["system"], username="ci-bot")
    project_role_grant(
        actor=people["system"], project=people["project"], user=account.user, role=Role.ML_ENGINEER, reason="ci"
    )
    return account.user


@pytest.fixture
def project_admin(people: dict[str, Any]) -> Any:
    admin = User.objects.create_user(username="project-admin")
    project_role_grant(
        actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN, reason="admin"
    )
    return User.objects.get(pk=admin.pk)


def test_an_own_token_always_expires_within_the_bound_and_is_in_the_ledger(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    start = Entry.objects.count()
    before = timezone.now()
    row, token = api_token_create_own(actor=engineer, name="  laptop ", expires_in_days=30)
    assert row.user == engineer and row.name == "laptop" and row.state == "live"
    assert 29.9 < (row.expires_at - before).total_seconds() / 86400 < 30.1
    assert token.startswith(f"gov_{row.prefix}_") and token not in json.dumps(_entries(start))
    [entry] = _entries(start)
    assert (entry["action"], entry["subject"]["id"], entry["actor"]["name"]) == (
        "api_token.created",
        row.prefix,
        "ml-engineer",
    )
    assert entry["payload"] == {"user": "ml-engineer", "name": "laptop", "expires_at": row.expires_at.isoformat()}


@pytest.mark.parametrize("days", [0, -1, 366, True, "30", 30.0, None])
def test_an_expiry_outside_one_to_the_maximum_is_refused_and_changes_nothing(people: dict[str, Any], days: Any) -> None:
    start, tokens = Entry.objects.count(), ApiToken.objects.count()
    with pytest.raises(DomainError) as refused:
        api_token_create_own(actor=people["ml_engineer"], name="laptop", expires_in_days=days)
    assert refused.value.code == "invalid_input"
    assert refused.value.fields == {"expires_in_days": ["a whole number of days from 1 to 365"]}
    assert (Entry.objects.count(), ApiToken.objects.count()) == (start, tokens)


def test_the_maximum_comes_from_the_setting(people: dict[str, Any]) -> None:
    with override_settings(API_TOKEN_MAX_DAYS=30):
        with pytest.raises(DomainError, match="1 to 30 days"):
            api_token_create_own(actor=people["auditor"], name="laptop", expires_in_days=31)
        assert api_token_create_own(actor=people["auditor"], name="laptop", expires_in_days=30)[0].state == "live"


@pytest.mark.parametrize(("name", "problem"), [("  ", "may not be blank"), ("x" * 101, "at most 100 characters")])
def test_a_blank_or_too_long_name_is_refused(people: dict[str, Any], name: str, problem: str) -> None:
    with pytest.raises(DomainError) as refused:
        api_token_create_own(actor=people["ml_engineer"], name=name, expires_in_days=30)
    assert refused.value.fields == {"name": [problem]}
    assert not ApiToken.objects.exists()


def test_a_service_account_does_not_make_its_own_tokens(ci: Any) -> None:
    with pytest.raises(PermissionDenied, match="created by a platform admin"):
        api_token_create_own(actor=ci, name="more", expires_in_days=30)
    assert not ApiToken.objects.filter(user=ci).exists()


def test_who_revokes_whose_token(people: dict[str, Any], ci: Any, project_admin: Any) -> None:
    system, engineer, steward = people["system"], people["ml_engineer"], people["data_steward"]
    mine, _ = api_token_create(actor=engineer, user=engineer, name="mine")
    leaked, _ = api_token_create(actor=engineer, user=engineer, name="leaked")
    bots, _ = api_token_create(actor=system, user=ci, name="ci")
    systems, _ = api_token_create(actor=system, user=system, name="system")
    # A platform admin of another project, and the owner of a service account elsewhere.
    elsewhere = project_create(actor=system, slug="elsewhere", name="Elsewhere")
    stranger_admin = User.objects.create_user(username="stranger-admin")
    project_role_grant(actor=system, project=elsewhere, user=stranger_admin, role=Role.PLATFORM_ADMIN, reason="x")
    owned = service_account_create(actor=system, username="steward-bot", owner=steward).user
    owned_token, _ = api_token_create(actor=system, user=owned, name="steward-bot")

    refused = [
        (steward, mine),  # another person's token
        (stranger_admin, mine),  # a person working in a project they do not administer
        (stranger_admin, bots),  # the account works in a project they do not administer
        (project_admin, systems),  # the system account is a global admin's alone
        (engineer, owned_token),  # neither theirs nor an account they manage
    ]
    start = Entry.objects.count()
    for actor, token in refused:
        with pytest.raises(PermissionDenied):
            api_token_revoke(actor=actor, token=token)
    assert Entry.objects.count() == start and not ApiToken.objects.filter(revoked_at__isnull=False).exists()

    assert api_token_revoke(actor=engineer, token=mine) is True
    assert api_token_revoke(actor=project_admin, token=bots) is True  # a service account of their project
    assert api_token_revoke(actor=project_admin, token=leaked) is True  # a person working in their project
    assert api_token_revoke(actor=steward, token=owned_token) is True  # the account's owner
    assert api_token_revoke(actor=project_admin, token=bots) is False  # already revoked: no second entry
    assert [(e["action"], e["actor"]["name"], e["payload"]) for e in _entries(start)] == [
        ("api_token.revoked", "ml-engineer", {"user": "ml-engineer"}),
        ("api_token.revoked", "project-admin", {"user": "ci-bot"}),
        ("api_token.revoked", "project-admin", {"user": "ml-engineer"}),
        ("api_token.revoked", "data-steward", {"user": "steward-bot"}),
    ]


# --- The API ---------------------------------------------------------------------------------


def _session(user: Any) -> Client:
    client = Client()
    admin_login(client, user)
    return client


def test_a_verified_session_creates_a_token_shown_once_that_works_until_revoked(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    session = _session(engineer)
    start = Entry.objects.count()
    created = session.post(
        "/api/v1/tokens/", {"name": "notebook", "expires_in_days": 30}, content_type="application/json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    token, prefix = body["token"], body["prefix"]
    assert body["user"] == "ml-engineer" and body["state"] == "live" and body["last_used_at"] is None
    assert Client().get("/api/v1/me", **_token_auth(token)).json()["username"] == "ml-engineer"

    listed = Client().get("/api/v1/tokens/", **_token_auth(token)).json()
    assert [t["prefix"] for t in listed["results"]] == [prefix] and "token" not in listed["results"][0]
    assert listed["results"][0]["last_used_at"] is not None

    # A token-authenticated request lists and revokes, here its own token.
    revoked = Client().post(f"/api/v1/tokens/{prefix}/revoke", **_token_auth(token))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert Client().get("/api/v1/me", **_token_auth(token)).status_code == 401
    again = session.post(f"/api/v1/tokens/{prefix}/revoke")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_revoked"
    assert [e["action"] for e in _entries(start)] == ["api_token.created", "api_token.revoked"]


def test_a_token_does_not_create_tokens(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    _, token = api_token_create_own(actor=engineer, name="leaked", expires_in_days=1)
    start, count = Entry.objects.count(), ApiToken.objects.count()
    response = Client().post(
        "/api/v1/tokens/", {"name": "longer", "expires_in_days": 365}, content_type="application/json",
        **_token_auth(token),
    )  # fmt: skip
    assert response.status_code == 403 and response.json()["error"]["code"] == "session_required"
    assert (Entry.objects.count(), ApiToken.objects.count()) == (start, count)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "t", "expires_in_days": 0}, ["expires_in_days"]),
        ({"name": "t", "expires_in_days": 366}, ["expires_in_days"]),
        ({"name": "t", "expires_in_days": "soon"}, ["expires_in_days"]),
        ({"expires_in_days": 30}, ["name"]),
        ({"name": 5}, ["name"]),  # ledgered text: a number is not a name
        ({"name": "x" * 101}, ["name"]),
        ({"name": "t", "user": "someone-else"}, ["user"]),  # not an input: a token is for the caller
    ],
)
def test_bad_input_is_a_400_naming_the_field(people: dict[str, Any], body: dict[str, Any], fields: list[str]) -> None:
    session = _session(people["ml_engineer"])
    start = Entry.objects.count()
    response = session.post("/api/v1/tokens/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_input"
    assert sorted(response.json()["error"]["fields"]) == fields
    assert not ApiToken.objects.exists() and Entry.objects.count() == start


def test_the_default_expiry_is_ninety_days(people: dict[str, Any]) -> None:
    response = _session(people["auditor"]).post("/api/v1/tokens/", {"name": "t"}, content_type="application/json")
    assert response.status_code == 201
    row = ApiToken.objects.get(prefix=response.json()["prefix"])
    assert round((row.expires_at - row.created_at).total_seconds() / 86400) == 90


def test_the_list_shows_ones_own_and_a_platform_admin_filters_by_user(
    people: dict[str, Any], ci: Any, project_admin: Any
) -> None:
    engineer = people["ml_engineer"]
    _, mine = api_token_create_own(actor=engineer, name="mine", expires_in_days=5)
    bots, _ = api_token_create(actor=people["system"], user=ci, name="ci")
    expired, _ = api_token_create_own(actor=engineer, name="old", expires_in_days=1)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now())

    own = Client().get("/api/v1/tokens/", **_token_auth(mine)).json()["results"]
    assert [(t["name"], t["state"]) for t in own] == [("old", "expired"), ("mine", "live")]
    assert Client().get("/api/v1/tokens/?user=ci-bot", **_token_auth(mine)).json()["count"] == 0

    admin = _session(project_admin)
    assert admin.get("/api/v1/tokens/").json()["count"] == 0  # they have none of their own
    [listed] = admin.get("/api/v1/tokens/?user=ci-bot").json()["results"]
    assert (listed["prefix"], listed["user"]) == (bots.prefix, "ci-bot")
    # A person working in their project: the project admin sees their tokens, to revoke a leaked one.
    assert admin.get("/api/v1/tokens/?user=ml-engineer").json()["count"] == 2
    # Another's token is no token at all to the engineer; the project admin revokes the bot's.
    assert Client().post(f"/api/v1/tokens/{bots.prefix}/revoke", **_token_auth(mine)).status_code == 404
    assert Client().post("/api/v1/tokens/no-such/revoke", **_token_auth(mine)).status_code == 404
    assert admin.post(f"/api/v1/tokens/{bots.prefix}/revoke").json()["state"] == "revoked"


# --- The failed-token lockout (common/ratelimit.py) --------------------------------------------


@pytest.fixture
def lockout_of_three(settings: Any) -> Any:
    """The embedded default's lockout, at 3 failures, counted from zero (the test settings loosen it)."""
    from django.core.cache import caches

    settings.API_TOKEN_LOCKOUT_FAILURES = 3
    caches["counters"].clear()
    yield
    caches["counters"].clear()


def test_wrong_tokens_sent_with_a_known_prefix_do_not_lock_its_holder_out(
    people: dict[str, Any], lockout_of_three: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefix is public (the ledger and the admin show it): an outsider who sends wrong
    secrets with it, from many addresses, locks none of them out of the real token."""
    import logging

    _, token = api_token_create_own(actor=people["auditor"], name="laptop", expires_in_days=5)
    prefix = token.split("_")[1]
    with caplog.at_level(logging.WARNING, logger="common.ratelimit"):
        for i in range(6):  # twice the limit, each guess from its own address
            guess = {"HTTP_AUTHORIZATION": f"Token gov_{prefix}_guess-{i}", "REMOTE_ADDR": f"203.0.113.{i}"}
            assert Client().get("/api/v1/me", **guess).status_code == 401
    assert not [r for r in caplog.records if r.getMessage() == "api token authentication locked out"]
    mine = Client().get("/api/v1/me", REMOTE_ADDR="198.51.100.7", **_token_auth(token))
    assert mine.status_code == 200 and mine.json()["username"] == "auditor"


def test_wrong_tokens_lock_out_their_address_and_a_replayed_token_everywhere(
    people: dict[str, Any], lockout_of_three: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    _, token = api_token_create_own(actor=people["auditor"], name="laptop", expires_in_days=5)
    prefix = token.split("_")[1]
    with caplog.at_level(logging.WARNING, logger="common.ratelimit"):
        # One address guessing: the address is locked, the right token included from there.
        for i in range(3):
            guess = {"HTTP_AUTHORIZATION": f"Token gov_{prefix}_guess-{i}", "REMOTE_ADDR": "198.51.100.9"}
            assert Client().get("/api/v1/me", **guess).status_code == 401
        locked = Client().get("/api/v1/me", REMOTE_ADDR="198.51.100.9", **_token_auth(token))
        assert locked.status_code == 429 and locked.json()["error"]["code"] == "locked_out"
        # One wrong token sent from many addresses (a stolen revoked token, say) is locked everywhere.
        for i in range(3):
            replay = {"HTTP_AUTHORIZATION": f"Token gov_{prefix}_replayed", "REMOTE_ADDR": f"203.0.113.{i}"}
            assert Client().get("/api/v1/me", **replay).status_code == 401
        replay = {"HTTP_AUTHORIZATION": f"Token gov_{prefix}_replayed", "REMOTE_ADDR": "203.0.113.99"}
        assert Client().get("/api/v1/me", **replay).status_code == 429
    locks = [r for r in caplog.records if r.getMessage() == "api token authentication locked out"]
    assert [(r.lockout, r.token_prefix) for r in locks] == [("ip", prefix), ("guess", prefix)]  # type: ignore[attr-defined]
    assert "replayed" not in caplog.text and "guess-" not in caplog.text
    # The holder, from any other address, is not locked.
    assert Client().get("/api/v1/me", REMOTE_ADDR="198.51.100.10", **_token_auth(token)).status_code == 200


def test_a_project_admin_revokes_a_colleagues_leaked_token_saying_why(
    people: dict[str, Any], project_admin: Any
) -> None:
    engineer = people["ml_engineer"]
    row, token = api_token_create_own(actor=engineer, name="laptop", expires_in_days=30)
    admin = _session(project_admin)
    start = Entry.objects.count()
    for body, field in (({"reason": 5}, "reason"), ({"reason": "x" * 2001}, "reason"), ({"why": "x"}, "why")):
        refused = admin.post(f"/api/v1/tokens/{row.prefix}/revoke", body, content_type="application/json")
        assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == [field], refused.content
    assert Entry.objects.count() == start and Client().get("/api/v1/me", **_token_auth(token)).status_code == 200
    revoked = admin.post(
        f"/api/v1/tokens/{row.prefix}/revoke", {"reason": "pasted in a public CI log"}, content_type="application/json"
    )
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert Client().get("/api/v1/me", **_token_auth(token)).status_code == 401
    [entry] = _entries(start)
    assert (entry["action"], entry["actor"]["name"], entry["payload"]) == (
        "api_token.revoked", "project-admin", {"user": "ml-engineer", "reason": "pasted in a public CI log"},
    )  # fmt: skip

    # The admin's revoke page takes the same optional reason.
    other, _ = api_token_create_own(actor=engineer, name="desktop", expires_in_days=30)
    page = f"/admin/governance/apitoken/{other.pk}/revoke/"
    assert "say so if it leaked" in admin.get(page).content.decode()
    assert admin.post(page, {"reason": "left the laptop on a train"}).status_code == 302
    assert _entries(start)[-1]["payload"] == {"user": "ml-engineer", "reason": "left the laptop on a train"}


def test_a_service_account_mints_no_tokens_even_as_a_project_admin(people: dict[str, Any], ci: Any) -> None:
    from governance.services import api_token_create_for_service_account

    admin_bot = service_account_create(actor=people["system"], username="admin-bot").user
    project_role_grant(
        actor=people["system"], project=people["project"], user=admin_bot, role=Role.PLATFORM_ADMIN, reason="x"
    )
    start = Entry.objects.count()
    with pytest.raises(PermissionDenied, match="creates no tokens"):
        api_token_create_for_service_account(actor=admin_bot, account=ci, name="more", expires_in_days=1)
    assert Entry.objects.count() == start and not ApiToken.objects.exists()
