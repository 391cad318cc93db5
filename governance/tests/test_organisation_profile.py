"""The organisation profile (issue 27): changed by a global admin alone, through
``organisation_profile_update``, each change one ledger entry with the old and new values; input
refused field by field with nothing changed; what the reports still lack; the admin's page saving
through the service, read by compliance officers and auditors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse

from audits.ledger.models import Entry
from common.errors import DomainError, PermissionDenied
from common.testing import admin_login
from governance.models import OrganisationProfile
from governance.roles import Role
from governance.selectors import organisation_profile
from governance.services import organisation_auditor_grant, organisation_profile_update, project_role_grant

User = get_user_model()
pytestmark = pytest.mark.django_db

FILLED = {
    "controller_name": "Acme Analytics GmbH",
    "controller_address": "Musterstraße 1\n10115 Berlin",
    "controller_email": "privacy@acme.example",
    "representative_not_required_reason": "established in the Union",
    "dpo_name": "Data Protection Office",
    "dpo_contact": "dpo@acme.example",
    "supervisory_authority_name": "Berliner Beauftragte für Datenschutz und Informationsfreiheit",
    "supervisory_authority_website": "https://www.datenschutz-berlin.de/",
    "security_measures": "access control per project; signed ledger",
}


def _bodies(start: int) -> list[dict[str, Any]]:
    rows = Entry.objects.filter(index__gte=start).order_by("index").values_list("body", flat=True)
    return [json.loads(bytes(body)) for body in rows]


def _next_index() -> int:
    return Entry.objects.count()


@pytest.fixture
def root() -> Any:
    return User.objects.create_superuser(username="root", email="root@acme.example", password=None)


def test_a_global_admin_fills_in_the_profile_and_each_change_is_ledgered(root: Any) -> None:
    start = _next_index()
    profile = organisation_profile_update(actor=root, **FILLED, controller_phone="  +49 30 1234567 ")
    [created] = _bodies(start)
    assert created["action"] == "organisation.profile_updated"
    assert created["subject"]["type"] == "organisation" and created["subject"]["id"] == "profile"
    assert created["actor"]["name"] == "root"
    changed = created["payload"]["changed"]
    assert changed["controller_name"] == {"old": "", "new": "Acme Analytics GmbH"}
    assert changed["controller_phone"] == {"old": "", "new": "+49 30 1234567"}  # trimmed
    assert set(changed) == set(FILLED) | {"controller_phone"}  # blank fields left blank are not changes
    stored = OrganisationProfile.objects.get()
    assert stored.pk == profile.pk == 1
    assert (stored.ledger_index, stored.updated_by) == (created["index"], root)
    assert organisation_profile().controller_phone == "+49 30 1234567"

    # A later change records only what changed, and leaves the other fields as they were.
    start = _next_index()
    organisation_profile_update(
        actor=root, controller_name="Acme Analytics SE", controller_address=FILLED["controller_address"]
    )
    [renamed] = _bodies(start)
    assert renamed["payload"] == {
        "changed": {"controller_name": {"old": "Acme Analytics GmbH", "new": "Acme Analytics SE"}}
    }
    stored = organisation_profile()
    assert (stored.controller_name, stored.dpo_contact, stored.ledger_index) == (
        "Acme Analytics SE", "dpo@acme.example", renamed["index"]
    )  # fmt: skip

    # Nothing changed: nothing written.
    start = _next_index()
    assert organisation_profile_update(actor=root, controller_name="Acme Analytics SE").ledger_index == renamed["index"]
    assert _next_index() == start


def test_nobody_else_changes_it_not_even_a_compliance_officer(people: dict[str, Any], root: Any) -> None:
    organisation_profile_update(actor=root, **FILLED)
    project_admin = User.objects.create_user(username="project-admin")
    project_role_grant(
        actor=people["system"], project=people["project"], user=project_admin, role=Role.PLATFORM_ADMIN, reason="t"
    )
    before, start = organisation_profile().controller_name, _next_index()
    for who in (people["compliance_officer"], people["auditor"], User.objects.get(pk=project_admin.pk)):
        with pytest.raises(PermissionDenied, match="only a platform admin may change the organisation profile"):
            organisation_profile_update(actor=who, controller_name="Someone Else Ltd")
    assert organisation_profile().controller_name == before
    assert _next_index() == start


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"controller_email": "privacy at acme", "controller_phone": "call us"},
         {"controller_email", "controller_phone"}),
        ({"supervisory_authority_website": "not a url", "ccpa_request_phone": "1-800-FLOWERS"},
         {"supervisory_authority_website", "ccpa_request_phone"}),
        ({"controller_name": "x" * 201}, {"controller_name"}),
        ({"legal_name": "Acme", "controller_name": 7}, {"legal_name"}),
        ({"controller_name": 7}, {"controller_name"}),
        ({"controller_name": "Acme\x00"}, {"controller_name"}),
        # One choice each: a representative named with a contact, or why none is required; not both.
        ({"representative_name": "EU Rep Ltd"}, {"representative_contact"}),
        ({"dpo_contact": "dpo@acme.example", "dpo_not_designated_reason": "not needed"},
         {"dpo_name", "dpo_not_designated_reason"}),
    ],
)  # fmt: skip
def test_invalid_input_is_refused_field_by_field_and_nothing_changes(
    root: Any, fields: dict[str, Any], named: set[str]
) -> None:
    organisation_profile_update(actor=root, controller_name="Acme", controller_email="privacy@acme.example")
    start = _next_index()
    with pytest.raises(DomainError) as refused:
        organisation_profile_update(actor=root, controller_address="Musterstraße 1", **fields)
    assert refused.value.code == "invalid_input" and refused.value.status_code == 400
    assert set(refused.value.fields) == named
    assert all(f"{name}:" in refused.value.message for name in named)
    assert _next_index() == start
    stored = organisation_profile()
    assert (stored.controller_name, stored.controller_address) == ("Acme", "")


def test_missing_for_reports_names_what_the_reports_lack(root: Any) -> None:
    empty = organisation_profile()
    assert empty.pk == 1 and empty._state.adding and empty.ledger_index is None  # unsaved: nobody filled it in
    assert empty.missing_for_reports() == [
        "the controller's legal name",
        "the controller's contact (e-mail or phone)",
        "the EU representative (name and contact), or why none is required",
        "the data protection officer (name and contact), or why none is designated",
        "the lead supervisory authority",
        "the technical and organisational security measures",
    ]
    profile = organisation_profile_update(
        actor=root,
        controller_name="Acme",
        controller_phone="+49 30 1234567",
        dpo_not_designated_reason="no Art. 37(1) case",
    )
    assert profile.missing_for_reports() == [
        "the EU representative (name and contact), or why none is required",
        "the lead supervisory authority",
        "the technical and organisational security measures",
    ]
    profile = organisation_profile_update(actor=root, **FILLED, dpo_not_designated_reason="")
    assert profile.missing_for_reports() == []
    assert profile.dpo_shown() == "Data Protection Office, dpo@acme.example"
    assert profile.representative_shown() == "not required: established in the Union"
    assert profile.controller_contact() == "privacy@acme.example; +49 30 1234567"


def _form(profile: OrganisationProfile | None = None, **changes: str) -> dict[str, str]:
    data = {name: getattr(profile, name) if profile else "" for name in OrganisationProfile.EDITABLE}
    return {**data, **changes}


@override_settings(REPORTS_CONTROLLER="Acme from the environment", REPORTS_CONTROLLER_CONTACT="privacy@acme.example")
def test_the_admin_page_saves_through_the_service(people: dict[str, Any], root: Any) -> None:
    client = Client()
    admin_login(client, root)
    add = reverse("admin:governance_organisationprofile_add")
    page = client.get(add).content.decode()
    assert 'value="Acme from the environment"' in page and 'value="privacy@acme.example"' in page  # prefilled

    # Refused by the form with the model's rules, nothing saved.
    response = client.post(add, _form(controller_name="Acme", dpo_name="Jane Roe"))
    assert response.status_code == 200
    assert "Give the data protection officer&#x27;s contact with their name." in response.content.decode()
    assert not OrganisationProfile.objects.exists()

    start = _next_index()
    response = client.post(add, _form(**FILLED))
    assert response.status_code == 302
    [entry] = _bodies(start)
    assert entry["action"] == "organisation.profile_updated" and entry["actor"]["name"] == "root"
    profile = OrganisationProfile.objects.get()
    assert (profile.updated_by, profile.ledger_index, profile.controller_name) == (
        root,
        entry["index"],
        "Acme Analytics GmbH",
    )
    assert client.get(add).status_code == 403  # one row: added once, then changed

    change = reverse("admin:governance_organisationprofile_change", args=[1])
    response = client.post(change, _form(profile, supervisory_authority_address="Alt-Moabit 59-61, 10555 Berlin"))
    assert response.status_code == 302
    [entry] = _bodies(start + 1)
    assert entry["payload"]["changed"] == {
        "supervisory_authority_address": {"old": "", "new": "Alt-Moabit 59-61, 10555 Berlin"}
    }
    page = client.get(change).content.decode()
    assert "nothing: the reports have what they need" in page
    assert f'href="{reverse("admin:ledger_entry_change", args=[entry["index"]])}"' in page and "by root" in page

    # The true outcome, not the admin's "changed successfully".
    profile.refresh_from_db()
    page = client.post(change, _form(profile), follow=True).content.decode()
    assert "Nothing changed" in page and "successfully" not in page
    assert len(_bodies(start)) == 2  # no entry written
    page = client.post(change, _form(profile, security_measures=""), follow=True).content.decode()
    assert f"ledger entry #{entry['index'] + 1}" in page and "DRAFT - incomplete" in page


def test_a_refusal_of_the_service_is_shown_and_nothing_is_saved(root: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The admin's permission check comes first, so only a race reaches a refusal: stand one in.
    def refuse(**_fields: Any) -> None:
        raise PermissionDenied("permission_denied", "only a platform admin may change the organisation profile")

    monkeypatch.setattr("governance.admin.organisation.organisation_profile_update", refuse)
    client = Client()
    admin_login(client, root)
    add = reverse("admin:governance_organisationprofile_add")
    response = client.post(add, _form(**FILLED), follow=True)
    page = response.content.decode()
    assert '<li class="error">Only a platform admin may change the organisation profile</li>' in page
    assert "successfully" not in page
    assert not OrganisationProfile.objects.exists()


def test_compliance_officers_and_auditors_read_it_and_change_nothing(people: dict[str, Any], root: Any) -> None:
    organisation_profile_update(actor=root, **FILLED)
    changelist = reverse("admin:governance_organisationprofile_changelist")
    change = reverse("admin:governance_organisationprofile_change", args=[1])
    outside = User.objects.create_user(username="outside-auditor")
    organisation_auditor_grant(actor=root, user=outside, reason="the external audit")
    readers = [people["compliance_officer"], people["auditor"], User.objects.get(pk=outside.pk)]
    for reader in readers:
        client = Client()
        admin_login(client, reader)
        assert "Acme Analytics GmbH" in client.get(changelist).content.decode()
        page = client.get(change).content.decode()
        assert "Acme Analytics GmbH" in page and 'name="controller_name"' not in page  # read-only
        assert client.post(change, _form(organisation_profile(), controller_name="Hijacked")).status_code == 403
    engineer = Client()
    admin_login(engineer, people["ml_engineer"])
    assert engineer.get(changelist).status_code == 403
    assert organisation_profile().controller_name == "Acme Analytics GmbH"
