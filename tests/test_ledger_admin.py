"""The ledger's admin pages are read-only, for staff holding the ledger read permissions."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from audits.ledger.services import checkpoint_create
from common.testing import admin_login
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import project_create, project_role_grant

pytestmark = pytest.mark.django_db
User = get_user_model()


def _staff(role: Role) -> object:
    system = User.objects.get(username=SYSTEM_USERNAME)
    user = User.objects.create_user(username=f"staff-{role.value}")
    project = project_create(actor=system, slug=f"p-{role.value.replace('_', '-')}", name="P")
    project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
    return User.objects.get(pk=user.pk)


def test_auditors_browse_entries_checkpoints_and_verifications_and_change_nothing(
    client: Client, append: Callable[..., object]
) -> None:
    append(3, action="dataset_version.registered")
    checkpoint_create()
    call_command("ledger", "verify", stdout=io.StringIO())
    admin_login(client, _staff(Role.AUDITOR))
    listing = client.get("/admin/ledger/entry/")
    assert listing.status_code == 200 and b"dataset_version.registered" in listing.content
    detail = client.get("/admin/ledger/entry/1/change/")
    assert detail.status_code == 200 and b"&quot;payload&quot;" in detail.content
    assert b'name="_save"' not in detail.content
    assert client.get("/admin/ledger/checkpoint/").status_code == 200
    runs = client.get("/admin/ledger/verificationrun/")
    assert runs.status_code == 200 and b'alt="True"' in runs.content  # the passed run, shown as passed
    assert client.get("/admin/ledger/entry/add/").status_code == 403
    assert client.post("/admin/ledger/entry/1/delete/", {"post": "yes"}).status_code == 403


def test_staff_without_the_ledger_permissions_see_no_ledger(client: Client, append: Callable[..., object]) -> None:
    append(1)
    admin_login(client, _staff(Role.DATA_STEWARD))
    assert client.get("/admin/ledger/entry/").status_code == 403
