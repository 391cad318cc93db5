"""``POST /api/v1/deployments/{id}/export-feedback``, client-level (no worker): the approval request
it opens naming the dataset, refusals of bad input naming the field with nothing changed, who may
ask, and a deployment that keeps no transcripts. The export itself is in ``test_preference`` and
``tests/test_feedback_to_dpo.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from audits.ledger.models import Entry
from governance.models import ApprovalRequest
from governance.services import api_token_create
from registry.tests.conftest import make_dataset
from serving.tests.deploying import actions, request
from training.tests.conftest import elsewhere  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.django_db


def _client(ready: dict[str, Any], user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {api_token_create(actor=ready['system'], user=user, name='t')[1]}")


@pytest.fixture
def world(ready: dict[str, Any]) -> dict[str, Any]:
    clients = {who: _client(ready, ready[who]) for who in ("ml_engineer", "data_steward", "auditor")}
    return {
        **ready, "clients": clients, "dataset": make_dataset(ready, slug="preferences"),
        "kept": request(ready, name="kept", keep_transcripts=True), "plain": request(ready, name="plain"),
    }  # fmt: skip


def _export(world: dict[str, Any], who: str = "ml_engineer", deployment: str = "kept", **body: Any) -> Any:
    return world["clients"][who].post(
        f"/api/v1/deployments/{world[deployment].pk}/export-feedback", {"dataset": world["dataset"].pk, **body},
        content_type="application/json",
    )  # fmt: skip


def test_an_export_request_opens_its_approval_request_naming_the_dataset(world: dict[str, Any]) -> None:
    response = _export(world, who="data_steward", comment="the corrections of January")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["action"] == "deployment.export_feedback" and body["state"] == "pending"
    assert body["subject_type"] == "deployment" and body["subject_id"] == str(world["kept"].pk)
    approval = ApprovalRequest.objects.get(pk=body["id"])
    assert approval.context == {"dataset": str(world["dataset"].pk), "environment": "staging"}
    assert approval.requester == world["data_steward"]
    assert actions(world["kept"])[-1] == "approval.requested"
    entry = Entry.objects.filter(subject_type="deployment", subject_id=str(world["kept"].pk)).order_by("index").last()
    recorded = json.loads(bytes(entry.body))["payload"]
    assert recorded["action"] == "deployment.export_feedback" and recorded["comment"] == "the corrections of January"
    assert recorded["context"]["dataset"] == str(world["dataset"].pk)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"dataset": 999999}, "dataset"),
        ({"dataset": "1"}, "dataset"),
        ({"dataset": 0}, "dataset"),
        ({"dataset": None}, "dataset"),
        ({"comment": 5}, "comment"),
        ({"comment": "x" * 4001}, "comment"),
        ({"environment": "production"}, "environment"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    world: dict[str, Any], body: dict[str, Any], named: str
) -> None:
    before = Entry.objects.count()
    response = _export(world, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert named in error["fields"] and named in error["message"]
    assert (
        Entry.objects.count() == before
        and not ApprovalRequest.objects.filter(action="deployment.export_feedback").exists()
    )


def test_refusals_another_projects_dataset_roles_and_no_transcripts(
    world: dict[str, Any],
    elsewhere: dict[str, Any],  # noqa: F811
) -> None:
    stranger = _client(world, elsewhere["owner"])
    before = Entry.objects.count()
    # Another project's dataset is no dataset of this one, whether the caller sees it or not.
    response = _export(world, dataset=elsewhere["dataset_version"].dataset_id)
    assert response.status_code == 400 and "dataset" in response.json()["error"]["fields"]
    assert _export(world, who="auditor").status_code == 403
    path = f"/api/v1/deployments/{world['kept'].pk}/export-feedback"
    assert stranger.post(path, {"dataset": 1}, content_type="application/json").status_code == 404
    refused = _export(world, deployment="plain")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_transcripts"
    assert Entry.objects.count() == before
    assert not ApprovalRequest.objects.filter(action="deployment.export_feedback").exists()


def test_the_admin_page_asks_through_the_same_service(world: dict[str, Any]) -> None:
    from common.testing import admin_login

    browser = Client()
    admin_login(browser, world["data_steward"])
    page = f"/admin/serving/deployment/{world['kept'].pk}/export-feedback/"
    assert browser.get(page).status_code == 200
    response = browser.post(page, {"dataset": world["dataset"].pk, "comment": "January"})
    assert response.status_code == 302, response.content
    approval = ApprovalRequest.objects.get(action="deployment.export_feedback")
    assert approval.context["dataset"] == str(world["dataset"].pk) and approval.comment == "January"
    refused = browser.post(f"/admin/serving/deployment/{world['plain'].pk}/export-feedback/",
                           {"dataset": world["dataset"].pk})  # fmt: skip
    assert refused.status_code == 200 and b"keeps no transcripts" in refused.content
    assert ApprovalRequest.objects.filter(action="deployment.export_feedback").count() == 1
