"""Schema, docs, request ids and structured logs."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from common.logging import JsonFormatter, RequestIdFilter
from common.request_context import reset_request_id, set_request_id


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served_offline(client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    document = json.loads(schema.content)
    assert document["openapi"].startswith("3.")
    assert "/api/v1/me" in document["paths"]
    assert "/api/v1/projects/" in document["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html  # assets are served locally


@pytest.mark.django_db
def test_request_id_is_echoed_or_generated(client: Client) -> None:
    given = client.get("/healthz", HTTP_X_REQUEST_ID="trace-0123456789")
    assert given["X-Request-ID"] == "trace-0123456789"
    injected = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nforged: yes")
    assert injected["X-Request-ID"] != "bad id\nforged: yes"
    assert len(injected["X-Request-ID"]) == 32


def test_log_lines_are_json_with_the_request_id() -> None:
    record = logging.LogRecord("governance.test", logging.INFO, __file__, 1, "decided %s", ("ok",), None)
    record.subject = "dataset_version:7"
    token = set_request_id("req-abcdef012345")
    try:
        RequestIdFilter().filter(record)
        line = JsonFormatter().format(record)
    finally:
        reset_request_id(token)
    entry = json.loads(line)
    assert entry["message"] == "decided ok"
    assert entry["request_id"] == "req-abcdef012345"
    assert entry["subject"] == "dataset_version:7"
    assert entry["time"].endswith("+00:00")
    assert entry["level"] == "INFO"


@pytest.mark.django_db
def test_every_operation_documents_its_errors(client: Client) -> None:
    document = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    assert "Error" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "400" in responses and "403" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if method == "post":
                assert {"409", "422"} <= set(responses), (method, path)
    approve = document["paths"]["/api/v1/approvals/{id}/approve"]["post"]["responses"]
    assert "self-approval" in approve["422"]["description"]


FREE_TEXT = {"reason", "comment", "justification", "note", "basis"}


@pytest.mark.django_db
def test_every_free_text_input_says_it_is_kept_in_the_ledger(client: Client) -> None:
    document = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    bodies = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                bodies.add(content["schema"]["$ref"].rsplit("/", 1)[-1])
    checked = []
    for name in sorted(bodies):
        for field, spec in document["components"]["schemas"][name].get("properties", {}).items():
            if field in FREE_TEXT and not spec.get("readOnly"):
                assert "append-only ledger" in spec.get("description", ""), (name, field)
                checked.append(f"{name}.{field}")
    assert len(checked) >= 10, checked
