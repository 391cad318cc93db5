"""The registry API, role by role, through token authentication."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from common.testing import admin_login
from governance.roles import Role
from governance.services import api_token_create
from registry.models import DatasetVersion, PiiVerdict
from registry.tests.conftest import make_dataset

pytestmark = pytest.mark.django_db
CSV = b"id,text\n1,hello\n2,world\n"


def _auth(user: Any) -> dict[str, str]:
    _, token = api_token_create(actor=user, user=user, name="t")
    return {"HTTP_AUTHORIZATION": f"Token {token}"}


def _upload(client: Client, dataset_id: int, auth: dict[str, str], name: str, data: bytes) -> Any:
    return client.post(f"/api/v1/datasets/{dataset_id}/versions/", {"file": SimpleUploadedFile(name, data)}, **auth)


def test_dataset_lifecycle_over_the_api(client: Client, people: dict[str, Any]) -> None:
    steward, engineer = _auth(people["data_steward"]), _auth(people["ml_engineer"])
    body = {
        "slug": "tickets", "name": "Tickets", "purpose": "fine-tuning", "lawful_basis": "contract",
        "retention_days": 90, "source": "helpdesk",
    }  # fmt: skip
    assert (
        client.post(
            "/api/v1/projects/assistant/datasets/", body, content_type="application/json", **engineer
        ).status_code
        == 403
    )
    created = client.post("/api/v1/projects/assistant/datasets/", body, content_type="application/json", **steward)
    assert created.status_code == 201, created.json()
    dataset_id = created.json()["id"]

    first = _upload(client, dataset_id, engineer, "t.csv", CSV)
    assert first.status_code == 201
    version = first.json()
    assert version["number"] == 1 and version["record_count"] == 2 and version["pii_verdict"] == "pending"
    assert version["usable"] is False and version["digest"].startswith("sha256:")
    again = _upload(client, dataset_id, engineer, "t.csv", CSV)
    assert again.status_code == 200 and again.json()["id"] == version["id"]

    bad = _upload(client, dataset_id, engineer, "t.csv", b"id,text\n1,ok\n2,too,many\n")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_file" and "line 3" in bad.json()["error"]["message"]

    detail = client.get(f"/api/v1/dataset-versions/{version['id']}", **_auth(people["auditor"]))
    assert detail.status_code == 200 and detail.json()["latest_scan"]["status"] == "queued"
    assert client.post(f"/api/v1/dataset-versions/{version['id']}/scan", **engineer).status_code == 409

    DatasetVersion.objects.filter(pk=version["id"]).update(pii_verdict=PiiVerdict.FOUND)  # as a scan would
    review = {"decision": "false_positive", "note": "product names"}
    assert (
        client.post(
            f"/api/v1/dataset-versions/{version['id']}/review", review, content_type="application/json", **engineer
        ).status_code
        == 403
    )
    reviewed = client.post(
        f"/api/v1/dataset-versions/{version['id']}/review", review, content_type="application/json", **steward
    )
    assert reviewed.status_code == 200 and reviewed.json()["usable"] is True
    invalid = client.post(
        f"/api/v1/dataset-versions/{version['id']}/review",
        {"decision": "fine"},
        content_type="application/json",
        **steward,
    )
    assert invalid.status_code == 400 and "decision" in invalid.json()["error"]["fields"]


def test_outsiders_get_404_and_lookups_are_for_compliance_officers(client: Client, people: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model

    dataset = make_dataset(people)
    outsider = _auth(get_user_model().objects.create_user(username="outsider"))
    assert client.get(f"/api/v1/datasets/{dataset.pk}", **outsider).status_code == 404
    assert client.get("/api/v1/projects/assistant/datasets/", **outsider).status_code == 404
    lookup = {"kind": "email", "identifier": "someone@example.org"}
    assert (
        client.post(
            "/api/v1/projects/assistant/data-subjects/lookup",
            lookup,
            content_type="application/json",
            **_auth(people["ml_engineer"]),
        ).status_code
        == 403
    )
    found = client.post(
        "/api/v1/projects/assistant/data-subjects/lookup",
        lookup,
        content_type="application/json",
        **_auth(people["compliance_officer"]),
    )
    assert found.status_code == 200 and found.json() == []
    wrong = client.post(
        "/api/v1/projects/assistant/data-subjects/lookup",
        {"kind": "shoe size", "identifier": "9"},
        content_type="application/json",
        **_auth(people["compliance_officer"]),
    )
    assert wrong.status_code == 400


def test_dataset_list_query_count_stays_flat(client: Client, people: dict[str, Any]) -> None:
    auth = _auth(people["auditor"])
    client.get("/api/v1/projects/assistant/datasets/", **auth)

    def queries_with(n: int) -> int:
        for i in range(n):
            make_dataset(people, slug=f"d{n}-{i}")
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/projects/assistant/datasets/", **auth).status_code == 200
        return len(ctx.captured_queries)

    assert queries_with(1) == queries_with(6)


def test_models_templates_and_lineage_over_the_api(client: Client, people: dict[str, Any], tmp_path: Any) -> None:
    from django.test import override_settings

    from registry.tiny_model import build_tiny_gpt2

    engineer = _auth(people["ml_engineer"])
    created = client.post(
        "/api/v1/projects/assistant/models/",
        {"slug": "bot", "name": "Bot"},
        content_type="application/json",
        **engineer,
    )
    assert created.status_code == 201
    model_id = created.json()["id"]
    folder = build_tiny_gpt2(tmp_path / "imports" / "base")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        registered = client.post(
            f"/api/v1/models/{model_id}/versions/", {"folder": str(folder)}, content_type="application/json", **engineer
        )
        assert registered.status_code == 201, registered.json()
        outside = client.post(
            f"/api/v1/models/{model_id}/versions/", {"folder": "/etc"}, content_type="application/json", **engineer
        )
        assert outside.status_code == 400 and outside.json()["error"]["code"] == "path_not_allowed"
    version = registered.json()
    assert version["weights_digest"].startswith("sha256:") and "model.safetensors" in version["files"]
    lineage = client.get(f"/api/v1/model-versions/{version['id']}/lineage", **_auth(people["auditor"]))
    assert lineage.status_code == 200 and lineage.json() == {"base_model_versions": [], "dataset_versions": []}

    template = {"slug": "answer", "body": "Answer from {context} only.", "intended_use": "grounded answers"}
    first = client.post(
        "/api/v1/projects/assistant/prompt-templates/", template, content_type="application/json", **engineer
    )
    same = client.post(
        "/api/v1/projects/assistant/prompt-templates/", template, content_type="application/json", **engineer
    )
    assert (first.status_code, same.status_code) == (201, 200) and first.json()["id"] == same.json()["id"]
    listing = client.get("/api/v1/projects/assistant/prompt-templates/", **_auth(people["auditor"]))
    assert [t["version"] for t in listing.json()["results"]] == [1]


def test_derived_versions_over_the_api(client: Client, people: dict[str, Any]) -> None:
    dataset = make_dataset(people)
    engineer, steward = _auth(people["ml_engineer"]), _auth(people["data_steward"])
    version = _upload(client, dataset.pk, engineer, "t.csv", b"id,text\n1,same\n1,same\n2,other\n").json()
    derived = client.post(f"/api/v1/dataset-versions/{version['id']}/deduplicate", **engineer)
    assert derived.status_code == 201
    assert (derived.json()["parent"], derived.json()["derivation"], derived.json()["record_count"]) == (
        version["id"], "deduplicated", 2,
    )  # fmt: skip
    assert client.post(f"/api/v1/dataset-versions/{version['id']}/anonymise", **engineer).status_code == 403
    assert client.post(f"/api/v1/dataset-versions/{version['id']}/anonymise", **steward).status_code == 202


def test_the_admin_shows_the_registry_read_only(client: Client, people: dict[str, Any]) -> None:
    dataset = make_dataset(people)
    admin_login(client, people["auditor"])
    for page in ("dataset", "datasetversion", "piiscan", "model", "modelversion", "prompttemplate"):
        assert client.get(f"/admin/registry/{page}/").status_code == 200, page
    assert client.get(f"/admin/registry/dataset/{dataset.pk}/change/").status_code == 200
    # The add page sends an auditor back to the list, saying which role registers; nothing is made.
    refused = client.get("/admin/registry/dataset/add/", follow=True)
    assert refused.redirect_chain == [("/admin/registry/dataset/", 302)]
    assert [str(m) for m in refused.context["messages"]] == [
        "Registering a dataset needs the data_steward role in a project."
    ]
    assert b"addlink" not in client.get("/admin/registry/dataset/").content  # no "Add" button either


def test_admin_pages_show_only_the_users_projects(client: Client, people: dict[str, Any]) -> None:
    from governance.services import project_create, project_role_grant

    mine = make_dataset(people, slug="mine")
    other_project = project_create(actor=people["system"], slug="elsewhere", name="Elsewhere")
    project_role_grant(
        actor=people["system"],
        project=other_project,
        user=people["data_steward"],
        role=Role.DATA_STEWARD,
        reason="test setup",
    )
    theirs = make_dataset({**people, "project": other_project}, slug="theirs")
    admin_login(client, people["auditor"])
    listing = client.get("/admin/registry/dataset/").content.decode()
    assert mine.name in listing and f"/admin/registry/dataset/{mine.pk}/change/" in listing
    assert f"/admin/registry/dataset/{theirs.pk}/change/" not in listing
    assert client.get(f"/admin/registry/dataset/{theirs.pk}/change/").status_code == 302  # "does not exist"


def test_a_project_platform_admin_administers_that_project_only(people: dict[str, Any]) -> None:
    from django.contrib.auth import get_user_model

    from common.errors import PermissionDenied
    from governance.permissions import has_project_role
    from governance.services import project_create, project_role_grant

    admin_user = get_user_model().objects.create_user(username="padmin")
    project_role_grant(
        actor=people["system"],
        project=people["project"],
        user=admin_user,
        role=Role.PLATFORM_ADMIN,
        reason="test setup",
    )
    admin_user = get_user_model().objects.get(pk=admin_user.pk)
    newcomer = get_user_model().objects.create_user(username="newcomer")
    project_role_grant(
        actor=admin_user, project=people["project"], user=newcomer, role=Role.AUDITOR, reason="test setup"
    )
    assert has_project_role(get_user_model().objects.get(pk=newcomer.pk), people["project"], Role.AUDITOR)
    other = project_create(actor=people["system"], slug="elsewhere", name="Elsewhere")
    with pytest.raises(PermissionDenied):
        project_role_grant(actor=admin_user, project=other, user=newcomer, role=Role.AUDITOR, reason="test setup")
    with pytest.raises(PermissionDenied):
        project_create(actor=admin_user, slug="mine", name="Mine")
