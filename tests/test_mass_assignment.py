"""Mass assignment: every write endpoint refuses read-only fields in its body (400 naming them)
and changes nothing. The endpoints come from the URL resolver (as in the permission matrix); the
fields an endpoint does take come from its OpenAPI request body, so a field the schema promises
is never refused and a field it does not promise is never taken.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from audits.ledger.models import Entry
from governance.services import api_token_create
from tests.test_permission_matrix import (
    AUTHENTICATED,
    BODIES,
    MATRIX,
    MEMBERS,
    MULTIPART,
    PUBLIC,
    _path,
    _scenario,
    api_endpoints,
    openapi_path,
)

# Fields the server sets: who requested or decided, the state, digests, ledger positions, ids.
READ_ONLY = {
    "id": 999999,
    "state": "approved",
    "approver": 1,
    "requester": 1,
    "owner": "mallory",
    "created_by": 1,
    "digest": "sha256:" + "0" * 64,
    "ledger_index": 0,
    "project": "elsewhere",
    "created_at": "2020-01-01T00:00:00Z",
}
WRITES = {"POST", "PUT", "PATCH"}
# Rows whose fields a write could reach: compared before and after every refused request.
WATCHED = [
    "governance.Project", "governance.ApprovalRequest", "registry.Dataset", "registry.DatasetVersion",
    "registry.Model", "registry.ModelVersion", "registry.PromptTemplate", "training.FineTuneRun",
    "checks.SecurityScan", "checks.BiasEvaluation", "serving.Deployment", "reports.ReportRun",
    "privacy.DataSubjectRequest", "privacy.LegalHold", "privacy.ModelReview",
]  # fmt: skip


def _input_fields(schema: dict[str, Any], route: str, method: str) -> set[str]:
    path = openapi_path(route)
    operation = schema["paths"][path][method.lower()]
    fields: set[str] = set()
    for content in operation.get("requestBody", {}).get("content", {}).values():
        body = content["schema"]
        if "$ref" in body:
            body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        fields |= {name for name, spec in body.get("properties", {}).items() if not spec.get("readOnly")}
    return fields


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    return {label: list(apps.get_model(label).objects.order_by("pk").values()) for label in WATCHED}


@pytest.mark.django_db
def test_every_write_endpoint_refuses_read_only_fields(client: Client, people: dict[str, Any]) -> None:
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    own = _scenario("own", people, members)
    tokens = {
        role: {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
        for role, user in members.items()
    }
    schema = SchemaGenerator().get_schema(request=None, public=True)
    writes = [(route, method) for route, method in api_endpoints() if method in WRITES]
    assert len(writes) > 40
    failures = []
    for key in writes:
        route, method = key
        allowed, _ = MATRIX[key]
        assert allowed != PUBLIC, key
        if not allowed:
            continue  # no token may call it (POST /tokens/: an admin session only): governance/tests/test_tokens.py
        role = MEMBERS[0] if allowed == AUTHENTICATED else allowed[0]  # type: ignore[index]
        refused = sorted(set(READ_ONLY) - _input_fields(schema, route, method))
        body = {**BODIES.get(key, {}), **{name: READ_ONLY[name] for name in refused}}
        path = _path(route, own)
        before, entries = _snapshot(), Entry.objects.count()
        if key in MULTIPART:
            body["file"] = SimpleUploadedFile("u.jsonl", b'{"t": "b"}\n')
            response = client.post(path, body, **tokens[role])
        else:
            call = client.put if method == "PUT" else client.patch if method == "PATCH" else client.post
            response = call(path, body, content_type="application/json", **tokens[role])
        error = response.json().get("error", {}) if response["Content-Type"] == "application/json" else {}
        if response.status_code != 400 or sorted(error.get("fields", {})) != refused:
            failures.append(f"{method} {route} as {role}: {response.status_code} {error or response.content[:200]!r}")
        elif Entry.objects.count() != entries or _snapshot() != before:
            failures.append(f"{method} {route}: refused, yet something changed")
    assert failures == [], f"{len(failures)} endpoints took read-only fields:\n" + "\n".join(failures)
