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


def test_a_run_that_changes_nothing_appends_nothing_and_a_password_reset_is_ledgered(tmp_path: Path) -> None:
    """Issue 26, class 13: every `make up` re-runs the seeding; it may not touch the ledger (or
    anyone's password) unless something is missing, and a password it sets is a ledger entry."""
    logins_file = tmp_path / "demo-logins.txt"
    _seed(logins_file)
    created = Entry.objects.filter(action="user.password_set")
    assert created.count() == len(Role)  # each demo person's first password, ledgered
    entries, hashes = Entry.objects.count(), dict(User.objects.values_list("username", "password"))
    _seed(logins_file)
    assert Entry.objects.count() == entries
    assert dict(User.objects.values_list("username", "password")) == hashes

    # The auditor's login lost from the file: its password is reset, and that is ledgered.
    kept = [line for line in logins_file.read_text().splitlines(True) if not line.startswith("demo-auditor\t")]
    logins_file.write_text("".join(kept))
    _seed(logins_file)
    reset = Entry.objects.filter(index__gte=entries)
    assert list(reset.values_list("action", "actor_name", "subject_type")) == [("user.password_set", "system", "user")]
    body = bytes(reset.get().body).decode()
    new_password = dict(line.split("\t") for line in logins_file.read_text().splitlines() if "\t" in line)
    assert "demo-auditor" in body and "missing from" in body
    assert new_password["demo-auditor"] not in body and User.objects.get(username="demo-auditor").password not in body
