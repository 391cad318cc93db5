"""A project's PII lists (issue 28 item 5): entries added and removed only by a data steward or a
platform admin of the project, each change one ledger entry in the same transaction; a value kept
as its keyed hash only; bad input refused naming the field, with nothing changed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from audits.ledger.models import Entry
from common.errors import Conflict, DomainError, PermissionDenied
from governance.models import PiiListEntry
from governance.roles import Role
from governance.services import (
    allow_value_hash,
    pii_list_entry_add,
    pii_list_entry_remove,
    pii_rule_validate,
    project_role_grant,
)

pytestmark = pytest.mark.django_db


def _bodies(start: int) -> list[dict[str, Any]]:
    return [json.loads(bytes(e.body)) for e in Entry.objects.filter(index__gte=start).order_by("index")]


def test_a_steward_adds_a_value_kept_as_its_keyed_hash_and_ledgered(people: dict[str, Any]) -> None:
    steward, project = people["data_steward"], people["project"]
    start = Entry.objects.count()
    entry, added = pii_list_entry_add(
        actor=steward, project=project, kind="allow", match="value", text="  Billing ",
        entity="LOCATION", reason="a team's name, not a place",
    )  # fmt: skip
    assert added and entry.value_hash == allow_value_hash("billing") and entry.pattern == ""
    assert len(entry.value_hash) == 64 and entry.value_hash != allow_value_hash("billing", secret="another key")
    (body,) = _bodies(start)
    assert body["action"] == "pii_list.entry_added" and body["actor"]["name"] == steward.username
    assert body["subject"]["type"] == "project" and body["subject"]["id"] == project.slug
    assert body["payload"] == {"kind": "allow", "match": "value", "entity": "LOCATION", "pattern": "",
                               "value_hash": entry.value_hash, "reason": "a team's name, not a place"}  # fmt: skip
    assert entry.ledger_index == start
    assert b"illing" not in bytes(Entry.objects.get(index=start).body)
    # The same rule again (another case and spacing of the same value): nothing added, nothing ledgered.
    again, added = pii_list_entry_add(
        actor=steward, project=project, kind="allow", match="value", text="BILLING", entity="LOCATION", reason="x"
    )
    assert (again.pk, added) == (entry.pk, False) and Entry.objects.count() == start + 1


def test_patterns_terms_and_removal_by_a_platform_admin(people: dict[str, Any]) -> None:
    steward, project = people["data_steward"], people["project"]
    deny, _ = pii_list_entry_add(
        actor=steward, project=project, kind="deny", match="pattern", text=r"CUST-\d{6}",
        entity="CUSTOMER_CODE", reason="our customer numbers",
    )  # fmt: skip
    # An allow entry may name a type the project's own deny entries report.
    allow, _ = pii_list_entry_add(
        actor=steward, project=project, kind="allow", match="pattern", text=r"CUST-000000",
        entity="CUSTOMER_CODE", reason="the test customer",
    )  # fmt: skip
    term, _ = pii_list_entry_add(
        actor=steward, project=project, kind="deny", match="term", text="Project  Nightingale",
        entity="PERSON", reason="a patient cohort's code name",
    )  # fmt: skip
    assert term.pattern == "Project Nightingale"
    admin = get_user_model().objects.create_user(username="project-admin")
    project_role_grant(
        actor=people["system"], project=project, user=admin, role=Role.PLATFORM_ADMIN, reason="test setup"
    )
    start = Entry.objects.count()
    pii_list_entry_remove(actor=admin, entry=allow, reason="the test customer was deleted")
    (body,) = _bodies(start)
    assert body["action"] == "pii_list.entry_removed"
    assert body["payload"]["entry"] == allow.pk and body["payload"]["added_at_index"] == allow.ledger_index
    assert body["payload"]["reason"] == "the test customer was deleted"
    allow.refresh_from_db()  # kept, marked removed, no longer applied
    assert (allow.removed_by, allow.removal_reason, allow.removal_ledger_index) == (
        admin,
        "the test customer was deleted",
        start,
    )
    live = PiiListEntry.objects.filter(project=project, removed_at__isnull=True).order_by("pk")
    assert list(live) == [deny, term]
    with pytest.raises(Conflict, match=f"PII list entry {allow.pk} was removed already"):
        pii_list_entry_remove(actor=admin, entry=allow, reason="again")
    # The same rule may be added again once removed: a new entry.
    again, added = pii_list_entry_add(
        actor=steward, project=project, kind="allow", match="pattern", text=r"CUST-000000",
        entity="CUSTOMER_CODE", reason="the test customer is back",
    )  # fmt: skip
    assert added and again.pk != allow.pk and Entry.objects.count() == start + 2


def test_other_roles_are_refused_and_nothing_changes(people: dict[str, Any]) -> None:
    project = people["project"]
    entry, _ = pii_list_entry_add(
        actor=people["data_steward"], project=project, kind="allow", match="pattern", text="[0-9a-f]{12}",
        reason="request ids",
    )  # fmt: skip
    start, rows = Entry.objects.count(), PiiListEntry.objects.count()
    for role in ("ml_engineer", "compliance_officer", "auditor"):
        with pytest.raises(PermissionDenied, match="changing the project's PII lists needs the data_steward or "):
            pii_list_entry_add(
                actor=people[role], project=project, kind="allow", match="value", text="x", reason="noise"
            )
        with pytest.raises(PermissionDenied):
            pii_list_entry_remove(actor=people[role], entry=entry, reason="not noise")
    assert (Entry.objects.count(), PiiListEntry.objects.count()) == (start, rows)


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"kind": "maybe"}, "kind", "one of allow, deny"),
        ({"match": "term"}, "match", "an allow entry matches one of value, pattern"),
        ({"text": "   "}, "pattern", "may not be blank"),
        ({"text": "[0-9"}, "pattern", "not a regular expression"),
        ({"text": "a*"}, "pattern", "matches the empty string"),
        ({"text": "a" * 201}, "pattern", "at most 200 characters"),
        ({"entity": "person"}, "entity", "written in capitals"),
        ({"entity": "CUSTOMER_CODE"}, "entity", "CUSTOMER_CODE is not a type this project's scans report"),
        ({"kind": "deny", "match": "term", "entity": ""}, "entity", "a deny entry names the entity type"),
        ({"reason": " "}, "reason", "a list entry needs a reason"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    people: dict[str, Any], fields: dict[str, str], field: str, problem: str
) -> None:
    start = Entry.objects.count()
    call = {"kind": "allow", "match": "pattern", "text": "[0-9a-f]{12}", "entity": "PERSON", "reason": "ids"} | fields
    with pytest.raises(DomainError, match=f"the PII list was not changed: {field}: .*{problem}") as refused:
        pii_list_entry_add(actor=people["data_steward"], project=people["project"], **call)
    assert refused.value.code == "invalid_input" and list(refused.value.fields) == [field]
    assert Entry.objects.count() == start and not PiiListEntry.objects.exists()


def test_the_pure_rule_needs_no_database() -> None:
    rule = pii_rule_validate(kind="allow", match="value", text="Checkout", entity="PERSON", secret="k")
    assert (rule.pattern, rule.value_hash) == ("", allow_value_hash(" checkout ", secret="k"))


def test_the_api_lists_adds_and_removes_through_the_services(people: dict[str, Any]) -> None:
    from rest_framework.test import APIClient

    project = people["project"]
    steward, engineer = APIClient(), APIClient()
    steward.force_authenticate(people["data_steward"])
    engineer.force_authenticate(people["ml_engineer"])
    url = f"/api/v1/projects/{project.slug}/pii-lists/"
    body = {"kind": "allow", "match": "value", "text": "Checkout", "entity": "PERSON", "reason": "a page's name"}
    start = Entry.objects.count()
    added = steward.post(url, body, format="json")
    assert added.status_code == 201, added.content
    assert added.json()["value_hash"] == allow_value_hash("checkout") and b"Checkout" not in added.content
    assert steward.post(url, body, format="json").status_code == 200  # held already: nothing added
    assert Entry.objects.count() == start + 1
    refused = steward.post(url, {**body, "match": "pattern", "text": "(unclosed"}, format="json")
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["pattern"]
    unknown = steward.post(url, {**body, "value_hash": "0" * 64}, format="json")
    assert unknown.status_code == 400 and "value_hash" in unknown.json()["error"]["fields"]
    assert engineer.post(url, body, format="json").status_code == 403
    listed = engineer.get(url)  # every member reads the lists
    assert listed.status_code == 200 and [e["entity"] for e in listed.json()["results"]] == ["PERSON"]
    outsider = APIClient()
    outsider.force_authenticate(get_user_model().objects.create_user(username="outsider"))
    assert outsider.get(url).status_code == 404
    entry_id = listed.json()["results"][0]["id"]
    remove = f"/api/v1/pii-list-entries/{entry_id}/remove"
    assert outsider.post(remove, {"reason": "x"}, format="json").status_code == 404
    assert engineer.post(remove, {"reason": "x"}, format="json").status_code == 403
    assert steward.post(remove, {}, format="json").status_code == 400
    removed = steward.post(remove, {"reason": "the page was renamed"}, format="json")
    assert removed.status_code == 200 and removed.json()["removal_reason"] == "the page was renamed"
    assert _bodies(start)[-1]["action"] == "pii_list.entry_removed" and steward.get(url).json()["count"] == 0
    assert steward.post(remove, {"reason": "again"}, format="json").status_code == 409
    assert engineer.post(remove, {"reason": "x"}, format="json").status_code == 403  # the role, before the state


def test_the_admin_page_adds_and_removes_an_entry(client: Any, people: dict[str, Any]) -> None:
    from common.testing import admin_login

    project = people["project"]
    admin_login(client, people["data_steward"])
    form = {"project": project.slug, "kind": "deny", "match": "pattern", "text": r"CUST-\d{6}",
            "entity": "CUSTOMER_CODE", "reason": "our customer numbers"}  # fmt: skip
    page = client.get("/admin/governance/piilistentry/add/")
    assert page.status_code == 200 and b"Add a PII list entry" in page.content
    bad = client.post("/admin/governance/piilistentry/add/", {**form, "text": "a*"})
    assert bad.status_code == 200 and b"matches the empty string" in bad.content and not PiiListEntry.objects.exists()
    done = client.post("/admin/governance/piilistentry/add/", form)
    assert done.status_code == 302
    entry = PiiListEntry.objects.get()
    listed = client.get("/admin/governance/piilistentry/")
    assert listed.status_code == 200 and b"CUST-\\d{6}" in listed.content and b"Remove" in listed.content
    confirm = client.get(f"/admin/governance/piilistentry/{entry.pk}/remove/")
    assert confirm.status_code == 200 and b"our customer numbers" in confirm.content
    assert client.post(f"/admin/governance/piilistentry/{entry.pk}/remove/", {"reason": ""}).status_code == 302
    entry.refresh_from_db()
    assert entry.removed_at is None  # refused without a reason
    client.post(f"/admin/governance/piilistentry/{entry.pk}/remove/", {"reason": "numbers changed"})
    entry.refresh_from_db()
    assert entry.removal_reason == "numbers changed"
    assert b"removed " in client.get("/admin/governance/piilistentry/?state=removed").content
    # An auditor reads the page but may not add.
    pii_list_entry_add(actor=people["data_steward"], project=project, reason="x", **{k: form[k] for k in
                       ("kind", "match", "text", "entity")})  # fmt: skip
    admin_login(client, people["auditor"])
    assert client.get("/admin/governance/piilistentry/").status_code == 200
    assert client.get("/admin/governance/piilistentry/add/").status_code == 403
    live = PiiListEntry.objects.get(removed_at__isnull=True)
    assert client.get(f"/admin/governance/piilistentry/{live.pk}/remove/").status_code == 403
