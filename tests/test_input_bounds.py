"""Input the database cannot hold or must not see: list paging, ids past 64 bits, NUL characters in
query strings, and report requests naming another project's model version. Each is a 400 that
names the parameter (never a 500), and answers the same for what exists elsewhere as for nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.models import ApiToken
from governance.roles import Role
from governance.services import api_token_create, project_create, project_role_grant
from registry.services import model_create, model_version_register_folder
from registry.tiny_model import build_tiny_gpt2

pytestmark = pytest.mark.django_db


def _token(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}


def _bad_request(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and field in error["fields"], error


@pytest.mark.parametrize(
    "query, field",
    [
        (f"limit={2**63}", "limit"),
        (f"limit={2**64}", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=\u0661", "limit"),  # an Arabic-Indic one: int() takes it, the API does not
        ("limit=ten", "limit"),
        (f"offset={2**63}", "offset"),
        ("offset=-5", "offset"),
        ("offset=\u00b2", "offset"),
    ],
)
def test_list_paging_out_of_range_is_a_400_naming_the_parameter(people: dict[str, Any], query: str, field: str) -> None:
    steward = _token(people["data_steward"])
    for path in ("/api/v1/approvals/", "/api/v1/projects/"):
        _bad_request(Client().get(f"{path}?{query}", **steward), field)


def test_list_paging_pages_within_the_bounds(people: dict[str, Any]) -> None:
    for slug in ("beta", "gamma"):
        project_create(actor=people["system"], slug=slug, name=slug.title())
    root = get_user_model().objects.create_superuser(username="root", password=None)
    client, admin = Client(), _token(root)  # a platform admin lists every project
    everything = client.get("/api/v1/projects/?limit=1000", **admin).json()
    assert everything["count"] == 3 and len(everything["results"]) == 3
    page = client.get("/api/v1/projects/?limit=1&offset=1", **admin).json()
    assert page["results"] == [everything["results"][1]]
    past_the_end = client.get(f"/api/v1/projects/?offset={2**62}", **admin).json()
    assert past_the_end["count"] == 3 and past_the_end["results"] == []


def test_a_nul_character_in_a_query_string_is_a_400(people: dict[str, Any]) -> None:
    response = Client().get("/api/v1/approvals/?state=pend%00ing", **_token(people["auditor"]))
    _bad_request(response, "state")
    assert "NUL" in response.json()["error"]["message"]
    officer = Client()
    admin_login(officer, people["compliance_officer"])
    searched = officer.get("/admin/governance/approvalrequest/?q=a%00b")
    assert searched.status_code == 400 and b"NUL" in searched.content
    assert officer.get("/admin/governance/approvalrequest/?q=ab").status_code == 200


def test_ids_past_64_bits_are_a_400(people: dict[str, Any]) -> None:
    client, engineer = Client(), _token(people["ml_engineer"])
    body = {"name": "x", "base_model_version": 2**63, "dataset_versions": [1], "hyperparameters": {}}
    response = client.post(
        f"/api/v1/projects/{people['project'].slug}/fine-tune-runs/", body, content_type="application/json", **engineer
    )
    _bad_request(response, "base_model_version")
    report = {"kind": "annex_iv", "project": "assistant", "model_version": 2**64,
              "period_start": "2026-01-01", "period_end": "2026-02-01"}  # fmt: skip
    officer = _token(people["compliance_officer"])
    _bad_request(client.post("/api/v1/reports/", report, content_type="application/json", **officer), "model_version")


def test_a_report_on_another_projects_model_version_is_answered_like_a_missing_one(
    people: dict[str, Any], tmp_path: Path
) -> None:
    hidden = project_create(actor=people["system"], slug="secret-merger", name="Secret merger")
    owner = get_user_model().objects.create_user(username="hidden-engineer")
    project_role_grant(actor=people["system"], project=hidden, user=owner, role=Role.ML_ENGINEER, reason="setup")
    folder = build_tiny_gpt2(tmp_path / "imports" / "tiny")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        model = model_create(actor=owner, project=hidden, slug="tiny", name="Tiny")
        version, _ = model_version_register_folder(actor=owner, model=model, folder=str(folder))
    officer = _token(people["compliance_officer"])
    answers = []
    for pk in (version.pk, version.pk + 1000):
        body = {"kind": "annex_iv", "model_version": pk, "period_start": "2026-01-01", "period_end": "2026-02-01"}
        response = Client().post("/api/v1/reports/", body, content_type="application/json", **officer)
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and "secret-merger" not in response.content.decode()
        answers.append(error["message"].replace(str(pk), "N"))
    assert answers[0] == answers[1]


def test_the_token_admin_shows_and_revokes_only_ones_own_tokens(people: dict[str, Any]) -> None:
    steward = people["data_steward"]
    steward.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="governance", codename__in=["view_apitoken", "change_apitoken"]
        )
    )
    steward = get_user_model().objects.get(pk=steward.pk)
    mine, _ = api_token_create(actor=steward, user=steward, name="laptop")
    theirs, _ = api_token_create(actor=people["auditor"], user=people["auditor"], name="auditor-ci")
    client = Client()
    admin_login(client, steward)
    listing = client.get("/admin/governance/apitoken/").content.decode()
    assert mine.prefix in listing and theirs.prefix not in listing
    start = Entry.objects.count()

    def revoke(*tokens: ApiToken) -> list[str]:
        response = client.post(
            "/admin/governance/apitoken/",
            {"action": "revoke", "_selected_action": [t.pk for t in tokens], "post": "yes"},  # confirmed
            follow=True,
        )
        assert response.status_code == 200
        return [str(m) for m in response.context["messages"]]

    assert revoke(mine, theirs) == ["Revoked 1 token(s)."]  # the other's is not in the user's list
    assert revoke(mine) == ["No token revoked: each selected token was already revoked."]
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert Entry.objects.count() == start + 1
    # A platform admin sees every token and revokes the auditor's; the count is what it revoked.
    root = get_user_model().objects.create_superuser(username="root", password=None)
    admin_login(client, root)
    assert theirs.prefix in client.get("/admin/governance/apitoken/").content.decode()
    assert revoke(mine, theirs) == ["Revoked 1 token(s)."]
    theirs.refresh_from_db()
    assert theirs.revoked_at is not None and Entry.objects.count() == start + 2
