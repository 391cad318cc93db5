from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.test import Client, RequestFactory

from audits.ledger.models import Entry
from governance.models import Project
from governance.permissions import has_project_role
from governance.roles import Role

User = get_user_model()
pytestmark = pytest.mark.django_db


def _seed(path: Path) -> str:
    out = io.StringIO()
    call_command("seed_demo", logins_file=path, stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_writes_a_private_logins_file(tmp_path: Path) -> None:
    logins_file = tmp_path / "demo-logins.txt"
    first = _seed(logins_file)
    assert logins_file.stat().st_mode & 0o777 == 0o600
    logins = dict(
        line.split("\t") for line in logins_file.read_text().splitlines() if line and not line.startswith("#")
    )
    assert set(logins) == {f"demo-{r.value.replace('_', '-')}" for r in Role} | {"demo-ci"}
    for username, password in logins.items():
        if username != "demo-ci":
            assert password in first  # printed once
            assert authenticate(RequestFactory().post("/admin/login/"), username=username, password=password)
    assert Project.objects.count() == 2
    for role in Role:
        user = User.objects.get(username=f"demo-{role.value.replace('_', '-')}")
        assert all(has_project_role(user, project, role) for project in Project.objects.all())

    granted = Entry.objects.filter(action="project.role_granted").count()
    assert granted == 2 * len(Role) + 1  # each person in both projects, the CI account in one
    second = _seed(logins_file)
    assert "nothing created" in second
    # A role already held is not granted again: no new role_granted entries on a second run.
    assert Entry.objects.filter(action="project.role_granted").count() == granted
    assert not any(secret in second for secret in logins.values())
    assert User.objects.filter(username__startswith="demo-").count() == len(Role) + 1
    assert logins_file.read_text().count("\n") == len(logins) + 1

    response = Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {logins['demo-ci']}")
    assert response.status_code == 200
    assert response.json()["projects"] == [{"project": "support-assistant", "roles": ["ml_engineer"]}]


def test_seed_demo_renews_logins_missing_from_the_file(tmp_path: Path) -> None:
    logins_file = tmp_path / "demo-logins.txt"
    _seed(logins_file)
    logins_file.unlink()
    again = _seed(logins_file)
    assert "Demo logins created" in again
    logins = dict(
        line.split("\t") for line in logins_file.read_text().splitlines() if line and not line.startswith("#")
    )
    assert authenticate(
        RequestFactory().post("/admin/login/"), username="demo-auditor", password=logins["demo-auditor"]
    )
