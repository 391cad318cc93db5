"""The incident API: register, link, classify, report and close through the views, the 400s
that name the field (nothing changed), the list's filters and its flat query count, and another
project's incident answering 404."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audits.ledger.models import Entry
from governance.services import api_token_create
from incidents.models import Incident

pytestmark = pytest.mark.django_db
REGISTER = "/api/v1/projects/assistant/incidents/"


def auth(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}


def post(client: Client, path: str, body: dict[str, Any], who: dict[str, str]) -> Any:
    return client.post(path, body, content_type="application/json", **who)


def body(days_ago: int = 0, **overrides: Any) -> dict[str, Any]:
    aware = (timezone.now() - timedelta(days=days_ago)).isoformat()
    return {"title": "Leaked a phone number", "description": "In a completion.", "aware_at": aware, **overrides}


def test_register_classify_report_close(client: Client, world: dict[str, Any]) -> None:
    engineer, officer = auth(world["ml_engineer"]), auth(world["compliance_officer"])
    created = post(client, REGISTER, body(1, deployments=[world["deployment"].pk]), engineer)
    assert created.status_code == 201, created.content
    incident = created.json()
    assert incident["reference"] == "INC-1" and incident["deployments"] == [world["deployment"].pk]
    assert incident["clock_status"] == "not classified yet" and incident["overdue"] is False
    path = f"/api/v1/incidents/{incident['id']}"
    assert post(client, f"{path}/link", {"ai_systems": [world["system_"].pk]}, engineer).json()["ai_systems"] == [
        world["system_"].pk
    ]
    refused = post(client, f"{path}/classify", {"serious": True, "serious_kind": "death"}, engineer)
    assert refused.status_code == 403
    classified = post(client, f"{path}/classify", {"serious": True, "serious_kind": "death"}, officer).json()
    assert classified["clock"]["days"] == 10 and classified["clock"]["article"] == "Art. 73(4)"
    assert classified["days_left"] == 8  # aware a day ago, rounded down
    early = post(client, f"{path}/close", {"root_cause": "a", "corrective_action": "b"}, officer)
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_reported"
    reported = post(
        client, f"{path}/report", {"reported_at": timezone.now().isoformat(), "reference": "MSA-1"}, officer
    ).json()
    assert reported["state"] == "reported" and reported["authority_reference"] == "MSA-1"
    assert reported["days_left"] is None and reported["clock_status"].startswith("reported ")
    blank = post(client, f"{path}/close", {"root_cause": "", "corrective_action": "b"}, officer)
    assert blank.status_code == 400 and list(blank.json()["error"]["fields"]) == ["root_cause"]
    closed = post(client, f"{path}/close", {"root_cause": "a filter", "corrective_action": "fixed it"}, officer)
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert client.get(path, **auth(world["auditor"])).json()["root_cause"] == "a filter"
    assert client.get(path, **auth(world["stranger"])).status_code == 404
    assert [e.action for e in Entry.objects.filter(subject_type="incident").order_by("index")] == [
        "incident.registered", "incident.linked", "incident.classified", "incident.reported", "incident.closed"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": None}, "title"),
        ({"title": 5}, "title"),
        ({"aware_at": "yesterday"}, "aware_at"),
        ({"aware_at": "2026-01-02T10:00"}, "aware_at"),
        ({"occurred_at": "2026-13-01T00:00Z"}, "occurred_at"),
        ({"deployments": ["x"]}, "deployments"),
        ({"state": "closed"}, "state"),
        ({"serious": True}, "serious"),
    ],
)
def test_register_400s_name_the_field(
    client: Client, world: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    answer = post(client, REGISTER, {**body(), **change}, auth(world["ml_engineer"]))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["error"]["fields"], answer.json()
    assert not Incident.objects.exists()


def test_refusals_through_the_api(client: Client, world: dict[str, Any]) -> None:
    engineer = auth(world["ml_engineer"])
    other = post(client, REGISTER, body(deployments=[world["other_deployment"].pk]), engineer)
    assert other.status_code == 400
    assert other.json()["error"]["fields"] == {
        "deployments": [f"no deployment {world['other_deployment'].pk} in project assistant"]
    }
    assert post(client, REGISTER, body(), auth(world["auditor"])).status_code == 403
    assert post(client, REGISTER, body(), auth(world["stranger"])).status_code == 404
    pk = post(client, REGISTER, body(), engineer).json()["id"]
    officer = auth(world["compliance_officer"])
    kindless = post(client, f"/api/v1/incidents/{pk}/classify", {"serious": True}, officer)
    assert kindless.status_code == 400 and list(kindless.json()["error"]["fields"]) == ["serious_kind"]
    unknown = post(client, f"/api/v1/incidents/{pk}/classify", {"serious": True, "serious_kind": "bad"}, officer)
    assert unknown.status_code == 400 and "serious_kind" in unknown.json()["error"]["fields"]
    naive = post(
        client, f"/api/v1/incidents/{pk}/report", {"reported_at": "2026-01-01T00:00", "reference": "R"}, officer
    )
    assert naive.status_code == 400 and list(naive.json()["error"]["fields"]) == ["reported_at"]
    assert Entry.objects.filter(subject_type="incident").count() == 1


def test_list_filters_and_flat_queries(client: Client, world: dict[str, Any]) -> None:
    engineer, officer = auth(world["ml_engineer"]), auth(world["compliance_officer"])

    def register(days_ago: int, kind: str | None) -> int:
        pk = post(client, REGISTER, body(days_ago, deployments=[world["deployment"].pk]), engineer).json()["id"]
        if kind is not None:
            classify = {"serious": bool(kind), "serious_kind": kind}
            assert post(client, f"/api/v1/incidents/{pk}/classify", classify, officer).status_code == 200
        return pk

    late, soon, calm, unclassified = (
        register(16, "health"),
        register(1, "critical_infrastructure"),
        register(20, ""),
        register(0, None),
    )
    listed = [r["id"] for r in client.get("/api/v1/incidents/", **engineer).json()["results"]]
    assert listed == [late, soon, calm, unclassified]  # no clock: last, by id
    overdue = client.get("/api/v1/incidents/", {"overdue": "true"}, **engineer).json()["results"]
    assert [r["id"] for r in overdue] == [late] and overdue[0]["overdue"] is True and overdue[0]["days_left"] == -1
    assert {r["id"] for r in client.get("/api/v1/incidents/", {"overdue": "false"}, **engineer).json()["results"]} == {
        soon, calm, unclassified
    }  # fmt: skip
    assert [r["id"] for r in client.get("/api/v1/incidents/", {"serious": "false"}, **engineer).json()["results"]] == [
        calm
    ]
    assert client.get("/api/v1/incidents/", {"state": "closed"}, **engineer).json()["count"] == 0
    bad = client.get("/api/v1/incidents/", {"overdue": "maybe"}, **engineer)
    assert bad.status_code == 400 and list(bad.json()["error"]["fields"]) == ["overdue"]
    assert client.get("/api/v1/incidents/", {"state": "gone"}, **engineer).status_code == 400
    assert client.get("/api/v1/incidents/", **auth(world["stranger"])).json()["count"] == 0

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/incidents/", **engineer).status_code == 200
        return len(captured)

    before = queries()
    register(2, "death")
    register(3, None)
    assert queries() == before
