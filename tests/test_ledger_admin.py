"""The ledger's admin pages are read-only, for staff holding the ledger read permissions, and show
each reader the entries of their projects only (every entry to an organisation-wide auditor)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from audits.ledger.models import Entry
from audits.ledger.services import checkpoint_create
from common.testing import admin_login
from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import project_create, project_role_grant
from governance.services.auditors import organisation_auditor_grant
from registry.tests.conftest import make_dataset

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
    append(3, action="dataset_version.registered")  # the organisation's: no project's auditor reads them
    auditor = _staff(Role.AUDITOR)
    checkpoint_create()
    call_command("ledger", "verify", stdout=io.StringIO())
    admin_login(client, auditor)
    listing = client.get("/admin/ledger/entry/")
    assert listing.status_code == 200 and b"project.role_granted" in listing.content
    assert b"dataset_version.registered" not in listing.content
    detail = client.get("/admin/ledger/entry/4/change/")  # the auditor's project's role grant
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


def test_a_reader_of_another_project_opens_none_of_its_entries_and_an_organisation_auditor_opens_all(
    client: Client, people: dict[str, object]
) -> None:
    dataset = make_dataset(people)
    index = Entry.objects.get(action="dataset.created", subject_id=str(dataset.pk)).index
    newcomer = _staff(Role.AUDITOR)  # an auditor of a project of their own, and of no other
    checkpoint_create()
    admin_login(client, newcomer)
    listing = client.get("/admin/ledger/entry/")
    assert listing.status_code == 200 and b"project.role_granted" in listing.content
    assert b"dataset.created" not in listing.content and b"tickets" not in listing.content
    assert client.get("/admin/ledger/entry/", {"q": str(index)}).content.count(b"dataset.created") == 0
    change = client.get(f"/admin/ledger/entry/{index}/change/", follow=True)
    assert b"&quot;payload&quot;" not in change.content and b"doesn\xe2\x80\x99t exist" in change.content
    for page in ("proof/", "proof/download/"):
        answer = client.get(f"/admin/ledger/entry/{index}/{page}")
        assert answer.status_code == 404 and b"that you may read" in answer.content
    organisation_auditor_grant(actor=people["system"], user=people["data_steward"], reason="audit")
    client.logout()
    admin_login(client, User.objects.get(pk=people["data_steward"].pk))
    assert b"dataset.created" in client.get("/admin/ledger/entry/").content
    assert b"tickets" in client.get(f"/admin/ledger/entry/{index}/change/").content
    assert client.get(f"/admin/ledger/entry/{index}/proof/").status_code == 200
