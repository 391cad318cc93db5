"""Free text that the ledger keeps as written (reasons, comments, notes, justifications, bases) is
text: a number where text is expected is a 400 naming the field, at every endpoint that takes such
a field, never recorded as its digits. So is every other text input (names, slugs, paths,
environments, the text in a list or a mapping): the API takes text as JSON strings only, and
whole numbers (ids, counts, days) as JSON numbers only (``common.api.validated``). The endpoints and fields come from the URL resolver and the schema, as
in the permission matrix."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audits.ledger.models import Entry
from common.api import LEDGERED_TEXT_HELP
from governance.services import api_token_create
from tests.test_permission_matrix import (
    AUTHENTICATED,
    MATRIX,
    MEMBERS,
    _path,
    _scenario,
    api_endpoints,
    openapi_path,
)

NOT_TEXT = "Must be text (a JSON string), not a number."


def write_world(client: Client, people: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, dict[str, str]]]:
    """What the input tests send their bodies with: the API's schema, the permission matrix's
    own-project scenario, and a token (as request headers) for a member in each role."""
    document = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    own = _scenario("own", people, members)
    tokens = {
        role: {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
        for role, user in members.items()
    }
    return document, own, tokens


def _properties(document: dict[str, Any], route: str, method: str) -> dict[str, Any]:
    path = openapi_path(route)
    body = document["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    ref = body.get("application/json", {}).get("schema", {}).get("$ref")
    if not ref:
        return {}
    properties = document["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("properties", {})
    return {name: spec for name, spec in properties.items() if not spec.get("readOnly")}


def _ledgered_fields(document: dict[str, Any], route: str, method: str) -> list[str]:
    properties = _properties(document, route, method)
    return sorted(name for name, spec in properties.items() if spec.get("description") == LEDGERED_TEXT_HELP)


def _is_text(spec: dict[str, Any]) -> bool:
    """Free text (a ``CharField``): a string with no format and no list of choices."""
    return spec.get("type") == "string" and "format" not in spec and "enum" not in spec and "$ref" not in spec


def _wrong_type_bodies(document: dict[str, Any], route: str, method: str) -> list[tuple[str, Any, Any]]:
    """(field, a body giving a number or a boolean where the field takes text, or text or a
    boolean where it takes a whole number, the errors expected)."""
    bodies = []
    for name, spec in _properties(document, route, method).items():
        for kind, value in {"a number": 5, "a boolean": True}.items():
            message = [f"Must be text (a JSON string), not {kind}."]
            if _is_text(spec):
                bodies.append((name, {name: value}, message))
            elif spec.get("type") == "array" and _is_text(spec.get("items", {})):
                bodies.append((name, {name: ["ok", value]}, {"1": message}))
            elif spec.get("type") == "object" and _is_text(spec.get("additionalProperties") or {}):
                bodies.append((name, {name: {"k": value}}, {"k": message}))
        for kind, value in {"text": "5", "a boolean": False}.items():
            message = [f"Must be a whole number (a JSON number), not {kind}."]
            if spec.get("type") == "integer":
                bodies.append((name, {name: value}, message))
            elif spec.get("type") == "array" and spec.get("items", {}).get("type") == "integer":
                bodies.append((name, {name: [value]}, {"0": message}))
    return bodies


@pytest.mark.django_db
def test_a_number_given_for_ledgered_text_is_a_400_naming_the_field(client: Client, people: dict[str, Any]) -> None:
    document, own, tokens = write_world(client, people)
    entries = Entry.objects.count()
    checked, failures = [], []
    for route, method in api_endpoints():
        if method not in ("POST", "PUT"):
            continue
        allowed, _ = MATRIX.get((route, method), ([], False))  # a row missing: test_permission_matrix.py fails
        if not allowed:
            continue  # no token may call it (POST /tokens/: an admin session only): governance/tests/test_tokens.py
        auth = tokens["compliance_officer" if allowed == AUTHENTICATED else allowed[0]]
        for field in _ledgered_fields(document, route, method):
            call = client.put if method == "PUT" else client.post
            response = call(_path(route, own), {field: 5}, content_type="application/json", **auth)
            problems = response.json().get("error", {}).get("fields", {}).get(field) if response.content else None
            if response.status_code != 400 or problems != [NOT_TEXT]:
                failures.append(f"{method} {route} {field}: {response.status_code} {problems}")
            checked.append(f"{route} {field}")
    assert failures == [], "\n".join(failures)
    assert len(checked) >= 18, checked
    assert Entry.objects.count() == entries  # nothing refused was recorded


@pytest.mark.django_db
def test_a_value_of_another_json_type_given_for_any_text_or_whole_number_input_is_a_400_naming_it(
    client: Client, people: dict[str, Any]
) -> None:
    document, own, tokens = write_world(client, people)
    entries = Entry.objects.count()
    checked, failures = set(), []
    for route, method in api_endpoints():
        allowed, _ = MATRIX.get((route, method), ([], False))  # a row missing: test_permission_matrix.py fails
        if method not in ("POST", "PUT") or not allowed:
            continue
        auth = tokens["compliance_officer" if allowed == AUTHENTICATED else allowed[0]]
        call = client.put if method == "PUT" else client.post
        for field, body, expected in _wrong_type_bodies(document, route, method):
            response = call(_path(route, own), body, content_type="application/json", **auth)
            problems = response.json().get("error", {}).get("fields", {}).get(field) if response.content else None
            if response.status_code != 400 or problems != expected:
                failures.append(f"{method} {route} {body}: {response.status_code} {problems}")
            checked.add(f"{route} {field}")
    assert failures == [], "\n".join(failures)
    assert len(checked) >= 60, sorted(checked)
    assert Entry.objects.count() == entries  # nothing refused was recorded
