"""ML engineers in the admin: staff like every other role (the migration for those who held the
role before), read-only pages of their own projects, and the self-service API-token pages (add,
shown once, revoke after a confirmation) going through the same services as the API."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.urls import reverse
from guardian.shortcuts import assign_perm

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApiToken
from governance.roles import STAFF_ROLES, Role
from governance.services import api_token_create, project_create, project_role_grant, service_account_create
from registry.tests.conftest import make_dataset

User = get_user_model()
pytestmark = pytest.mark.django_db

# The pages an ML engineer works with, by admin URL name.
ENGINEER_PAGES = [
    "governance_approvalrequest", "governance_apitoken", "registry_dataset", "registry_datasetversion",
    "registry_piiscan", "registry_model", "registry_modelversion", "registry_prompttemplate",
    "training_finetunerun", "training_gpuquota", "checks_securityscan", "checks_biasevaluation",
    "serving_deployment",
]  # fmt: skip


def _engineer_client(people: dict[str, Any]) -> Client:
    client = Client()
    admin_login(client, people["ml_engineer"])
    return client


def test_the_ml_engineer_role_brings_staff_status_and_the_admin_pages(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    assert Role.ML_ENGINEER in STAFF_ROLES and engineer.is_staff
    client = _engineer_client(people)
    index = client.get("/admin/").content.decode()
    for name in ENGINEER_PAGES:
        url = reverse(f"admin:{name}_changelist")
        assert f'href="{url}"' in index, name
        assert client.get(url).status_code == 200, name
    # Nothing beyond their role: no model registration page (the API's), no ledger.
    assert client.get(reverse("admin:registry_model_add")).status_code == 403
    assert client.get(reverse("admin:ledger_entry_changelist")).status_code == 403


def test_the_engineer_sees_the_rows_of_their_projects_only(people: dict[str, Any]) -> None:
    mine = make_dataset(people, slug="mine")
    secret = project_create(actor=people["system"], slug="secret-merger", name="Secret merger")
    steward = User.objects.create_user(username="secret-steward")
    project_role_grant(actor=people["system"], project=secret, user=steward, role=Role.DATA_STEWARD, reason="x")
    theirs = make_dataset({**people, "project": secret, "data_steward": steward}, slug="theirs")
    client = _engineer_client(people)
    listing = client.get(reverse("admin:registry_dataset_changelist")).content.decode()
    assert "mine" in listing and "theirs" not in listing and "secret-merger" not in listing
    assert client.get(reverse("admin:registry_dataset_change", args=[mine.pk])).status_code == 200
    hidden = client.get(reverse("admin:registry_dataset_change", args=[theirs.pk]), follow=True)
    assert "secret-merger" not in hidden.content.decode()  # the admin's "does not exist" message


def test_the_migration_makes_earlier_ml_engineers_staff_but_not_service_accounts(people: dict[str, Any]) -> None:
    migration = importlib.import_module("governance.migrations.0009_ml_engineers_work_in_the_admin")
    project = people["project"]
    before = User.objects.create_user(username="engineer-before")  # as a grant made them before the change
    left = User.objects.create_user(username="engineer-left", is_active=False)
    for user in (before, left):
        assign_perm(Role.ML_ENGINEER.perm, user, project)
    bot = service_account_create(actor=people["system"], username="ci-before").user
    assign_perm(Role.ML_ENGINEER.perm, bot, project)
    reader = User.objects.create_user(username="auditor-only")
    assign_perm(Role.AUDITOR.perm, reader, project)

    migration.ml_engineers_become_staff(apps, None)
    staff = dict(
        User.objects.filter(pk__in=[before.pk, left.pk, bot.pk, reader.pk]).values_list("username", "is_staff")
    )
    assert staff == {"engineer-before": True, "engineer-left": False, "ci-before": False, "auditor-only": False}


def test_the_groups_hold_the_view_permissions() -> None:
    def codenames(group: str) -> set[str]:
        return set(Group.objects.get(name=group).permissions.values_list("codename", flat=True))

    assert {f"view_{page.split('_', 1)[1]}" for page in ENGINEER_PAGES} <= codenames("ml_engineer")
    assert all("view_apitoken" in codenames(role.value) for role in Role)
    assert not {"view_entry", "view_datasubjectrequest"} & codenames("ml_engineer")


# --- API tokens in the admin ------------------------------------------------------------------


ADD = "/admin/governance/apitoken/add/"
LIST = "/admin/governance/apitoken/"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "", "expires_in_days": "30"}, "Give the token a name."),
        ({"name": "laptop", "expires_in_days": "0"}, "At least 1 day."),
        ({"name": "laptop", "expires_in_days": "400"}, "At most 365 days (API_TOKEN_MAX_DAYS)."),
        ({"name": "laptop", "expires_in_days": "soon"}, "Enter a whole number of days, such as 30."),
        ({"name": "x" * 101, "expires_in_days": "30"}, "At most 100 characters."),
    ],
)
def test_the_add_page_explains_bad_input_and_creates_nothing(
    people: dict[str, Any], form: dict[str, str], message: str
) -> None:
    client = _engineer_client(people)
    start = Entry.objects.count()
    page = client.post(ADD, form)
    assert page.status_code == 200
    text = page.content.decode()
    assert message in text and "nothing was created" in text
    assert not ApiToken.objects.exists() and Entry.objects.count() == start


def test_the_add_page_shows_the_token_once_and_it_works(people: dict[str, Any]) -> None:
    client = _engineer_client(people)
    form = client.get(ADD).content.decode()
    assert 'value="90"' in form and "1 to 365 days" in form
    with override_settings(API_TOKEN_MAX_DAYS=60):
        assert "1 to 60 days" in client.get(ADD).content.decode()
    start = Entry.objects.count()
    shown = client.post(ADD, {"name": "laptop", "expires_in_days": "30"})
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"]
    row = ApiToken.objects.get()
    text = shown.content.decode()
    token = text.split('<code id="api-token">', 1)[1].split("</code>", 1)[0]
    assert token.startswith(f"gov_{row.prefix}_") and "it will not be shown again" in text
    assert Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert token not in client.get(LIST).content.decode()  # listed by name and prefix, never the token
    assert token not in client.get(reverse("admin:governance_apitoken_change", args=[row.pk])).content.decode()
    [entry] = [json.loads(bytes(b)) for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)]
    assert entry["action"] == "api_token.created" and entry["payload"]["name"] == "laptop"


def test_revoking_asks_first_then_revokes_through_the_service(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    row, token = api_token_create(actor=engineer, user=engineer, name="laptop")
    theirs, _ = api_token_create(actor=people["auditor"], user=people["auditor"], name="auditor-laptop")
    client = _engineer_client(people)
    listing = client.get(LIST).content.decode()
    assert "laptop" in listing and "auditor-laptop" not in listing and "token-live" in listing
    page = reverse("admin:governance_apitoken_revoke", args=[row.pk])
    assert f'href="{page}"' in listing
    confirm = client.get(page).content.decode()
    assert "Yes, revoke it" in confirm and row.prefix in confirm
    row.refresh_from_db()
    assert row.revoked_at is None  # asking changed nothing
    start = Entry.objects.count()
    done = client.post(page, follow=True)
    assert "it no longer works" in done.content.decode()
    assert Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}").status_code == 401
    assert [
        json.loads(bytes(b))["action"] for b in Entry.objects.filter(index__gte=start).values_list("body", flat=True)
    ] == ["api_token.revoked"]
    assert "was already revoked" in client.post(page, follow=True).content.decode()
    # Another person's token has no revoke page for the engineer.
    assert client.get(reverse("admin:governance_apitoken_revoke", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("admin:governance_apitoken_revoke", args=["not-a-number"])).status_code == 404


def test_the_bulk_revoke_asks_first(people: dict[str, Any]) -> None:
    engineer = people["ml_engineer"]
    tokens = [api_token_create(actor=engineer, user=engineer, name=f"t{i}")[0] for i in range(2)]
    client = _engineer_client(people)
    selected = {"action": "revoke", "_selected_action": [t.pk for t in tokens]}
    asked = client.post(LIST, selected)
    assert asked.status_code == 200 and "Yes, revoke them" in asked.content.decode()
    assert not ApiToken.objects.filter(revoked_at__isnull=False).exists()
    done = client.post(LIST, {**selected, "post": "yes"}, follow=True)
    assert [str(m) for m in done.context["messages"]] == ["Revoked 2 token(s)."]


def test_a_project_platform_admin_sees_and_revokes_the_tokens_of_those_working_in_it(people: dict[str, Any]) -> None:
    system, project = people["system"], people["project"]
    admin = User.objects.create_user(username="project-admin")
    project_role_grant(actor=system, project=project, user=admin, role=Role.PLATFORM_ADMIN, reason="admin")
    bot = service_account_create(actor=system, username="ci-bot").user
    project_role_grant(actor=system, project=project, user=bot, role=Role.ML_ENGINEER, reason="ci")
    bots, _ = api_token_create(actor=system, user=bot, name="pipeline")
    engineers, _ = api_token_create(actor=people["ml_engineer"], user=people["ml_engineer"], name="laptop")
    client = Client()
    admin_login(client, User.objects.get(pk=admin.pk))
    listing = client.get(LIST).content.decode()
    # Its service accounts' and its people's: a leaked laptop token is revoked without its owner.
    assert "pipeline" in listing and "ci-bot" in listing and "laptop" in listing
    client.post(reverse("admin:governance_apitoken_revoke", args=[bots.pk]))
    bots.refresh_from_db()
    engineers.refresh_from_db()
    assert bots.state == "revoked" and engineers.state == "live"
    client.post(reverse("admin:governance_apitoken_revoke", args=[engineers.pk]))
    engineers.refresh_from_db()
    assert engineers.state == "revoked"
