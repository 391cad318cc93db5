"""The API's one input boundary (common/parsers.py, common/api.py): at every JSON write endpoint a
body nested too deep, holding a number the ledger's canonical JSON cannot record, or too large is
a 400 or 413 in the API's JSON error shape naming the field (or the body), and nothing is
written. Before it, a deep body was a ``RecursionError`` and a huge integer in a nested field an
``IntegerDomainError`` (500s), and a body over Django's limit its HTML "Bad Request" page."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import rfc8785
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory, override_settings
from rest_framework.exceptions import ValidationError

from audits.ledger.models import Entry
from common.parsers import SAFE_INTEGER_MAX, BoundedJSONParser
from config.urls import internal_error
from governance.services import api_token_create
from tests.test_api_text_inputs import write_world
from tests.test_permission_matrix import (
    AUTHENTICATED,
    MATRIX,
    MEMBERS,
    MULTIPART,
    _path,
    _scenario,
    api_endpoints,
    openapi_path,
)

DEPTH = 5000  # past the decoder's recursion limit (about 1000): the RecursionError of before


def _deep(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def test_the_integer_bound_is_the_one_the_canonical_form_admits() -> None:
    assert rfc8785.dumps([SAFE_INTEGER_MAX, -SAFE_INTEGER_MAX]) == f"[{SAFE_INTEGER_MAX},-{SAFE_INTEGER_MAX}]".encode()
    for outside in (SAFE_INTEGER_MAX + 1, -SAFE_INTEGER_MAX - 1):
        with pytest.raises(rfc8785.IntegerDomainError):
            rfc8785.dumps(outside)


def test_a_problem_is_named_by_its_top_level_field_and_the_place_inside_it() -> None:
    parser, problems = BoundedJSONParser(), []
    for body in (
        '{"hyperparameters": {"lr": 0.1, "layers": [1, {"seed": 9007199254740993}]}, "name": "ok"}',
        '{"target": {"a": 1, "a": 2}}',
        '{"guard": ["x\\u0000"], "label_mapping": {"\\ud800": "y"}}',
        "[[1e400]]",
        '{"x": ' + "[" * 33 + "]" * 33 + "}",
    ):
        with pytest.raises(ValidationError) as refused:
            parser.parse(io.BytesIO(body.encode()), "application/json", {})
        problems.append(refused.value.detail)
    assert problems == [
        {"hyperparameters": ["layers[1].seed: 9007199254740993 is outside -(2^53-1) to 2^53-1, the integers the ledger records exactly"]},
        {"target": ["names the key 'a' more than once"]},
        {"guard": ["[0]: text with a NUL character or a lone surrogate"],
         "label_mapping": ["has a key with a NUL character or a lone surrogate"]},
        {"non_field_errors": ["[0][0]: a number too large to record (past the range of a double)"]},
        {"x": ["[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: "
               "nested deeper than 32 levels of arrays and objects"]},
    ]  # fmt: skip
    assert parser.parse(io.BytesIO(b'{"seed": 9007199254740991, "lr": 1e-300}'), "application/json", {}) == {
        "seed": SAFE_INTEGER_MAX, "lr": 1e-300,
    }  # fmt: skip


def _first_input(document: dict[str, Any], route: str, method: str) -> str:
    """A field the endpoint takes (the first its schema names), or ``x`` when it takes none."""
    body = document["paths"][openapi_path(route)][method.lower()].get("requestBody", {}).get("content", {})
    ref = body.get("application/json", {}).get("schema", {}).get("$ref")
    properties = document["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("properties", {}) if ref else {}
    writable = [name for name, spec in properties.items() if not spec.get("readOnly")]
    return writable[0] if writable else "x"


# (name, body for a field, expected status, expected code, where the error is: the field or the body)
CASES = [
    ("deep body", lambda field: _deep(), 400, "invalid_input", "non_field_errors"),
    ("deep field", lambda field: f'{{"{field}": {_deep()}}}', 400, "invalid_input", "field"),
    ("deep field, under the decoder's limit", lambda field: f'{{"{field}": {_deep(40)}}}', 400, "invalid_input",
     "field"),
    ("huge integer in a nested field", lambda field: json.dumps({field: {"seed": 2**64}}), 400, "invalid_input",
     "field"),
    ("integer one past the bound", lambda field: json.dumps({field: [SAFE_INTEGER_MAX + 1]}), 400, "invalid_input",
     "field"),
    ("number past a double", lambda field: f'{{"{field}": {{"lr": 1e400}}}}', 400, "invalid_input", "field"),
    ("repeated key", lambda field: f'{{"{field}": {{"a": 1, "a": 2}}}}', 400, "invalid_input", "field"),
    ("NUL in nested text", lambda field: json.dumps({field: {"a": "x\u0000y"}}), 400, "invalid_input", "field"),
    ("oversized body", lambda field: json.dumps({field: "x" * (1024 * 1024)}), 413, "body_too_large", None),
]  # fmt: skip


@pytest.mark.django_db
def test_every_json_write_endpoint_refuses_what_the_boundary_refuses(client: Client, people: dict[str, Any]) -> None:
    document, own, tokens = write_world(client, people)
    entries = Entry.objects.count()
    checked, failures = set(), []
    for route, method in api_endpoints():
        allowed, _ = MATRIX.get((route, method), ([], False))  # a row missing: test_permission_matrix.py fails
        if method not in ("POST", "PUT") or (route, method) in MULTIPART or not allowed:
            continue  # POST /tokens/ (an admin session only): its parser is the same default
        auth = tokens["compliance_officer" if allowed == AUTHENTICATED else allowed[0]]
        field = _first_input(document, route, method)
        call = client.put if method == "PUT" else client.post
        for name, body, status, code, where in CASES:
            response = call(_path(route, own), body(field), content_type="application/json", **auth)
            error = response.json().get("error", {}) if response["Content-Type"] == "application/json" else {}
            named = where is None or (field if where == "field" else where) in error.get("fields", {})
            if response.status_code != status or error.get("code") != code or not named:
                failures.append(f"{method} {route} {name}: {response.status_code} {response.content[:200]!r}")
            checked.add(route)
    assert failures == [], "\n".join(failures)
    assert len(checked) >= 40, sorted(checked)
    assert Entry.objects.count() == entries  # nothing refused was recorded


@pytest.mark.django_db
def test_a_run_request_whose_seed_the_ledger_cannot_record_is_a_400_naming_hyperparameters(
    client: Client, people: dict[str, Any]
) -> None:
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    own = _scenario("own", people, members)
    engineer = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=members['ml_engineer'], user=members['ml_engineer'], name='t')[1]}"}  # fmt: skip
    url = f"/api/v1/projects/{own['slug']}/fine-tune-runs/"

    def request(seed: int) -> Any:
        body = {
            "name": "seeded", "base_model_version": own["model_version"], "dataset_versions": [own["version"]],
            "text_field": "t", "hyperparameters": {"learning_rate": 0.001, "batch_size": 1, "max_steps": 1, "seed": seed},
        }  # fmt: skip
        return client.post(url, body, content_type="application/json", **engineer)

    entries = Entry.objects.count()
    for seed in (SAFE_INTEGER_MAX + 1, -(2**63), 10**30):
        response = request(seed)
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and list(error["fields"]) == ["hyperparameters"], error
        assert "seed" in error["fields"]["hyperparameters"][0]
    assert Entry.objects.count() == entries
    accepted = request(SAFE_INTEGER_MAX)  # the largest the ledger records: the run is requested
    assert accepted.status_code == 201, accepted.content
    assert accepted.json()["hyperparameters"]["seed"] == SAFE_INTEGER_MAX


@pytest.mark.django_db
def test_bodies_past_djangos_own_limits_answer_the_json_error(client: Client, people: dict[str, Any]) -> None:
    user = people["ml_engineer"]
    token = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
    url = f"/api/v1/projects/{people['project'].slug}/models/"
    entries = Entry.objects.count()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096):  # read by Django before the parser
        response = client.post(url, {"slug": "m", "name": "x" * 8192}, content_type="application/json", **token)
    assert response.status_code == 413 and response["Content-Type"] == "application/json", response.content
    assert response.json()["error"] == {
        "code": "body_too_large", "message": "the request body is larger than this API accepts: at most 4096 bytes",
        "fields": {},
    }  # fmt: skip
    from registry.tests.conftest import make_dataset

    dataset = make_dataset(people, slug="many-fields")
    upload = {"file": SimpleUploadedFile("u.jsonl", b'{"t": "b"}\n'), **{f"f{i}": "x" for i in range(20)}}
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10):
        response = client.post(f"/api/v1/datasets/{dataset.pk}/versions/", upload, **token)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_request", response.content
    assert Entry.objects.count() == entries + 1  # the dataset made above, nothing else


@pytest.mark.django_db
def test_a_body_of_a_type_the_operation_does_not_take_is_a_415_naming_both(
    client: Client, people: dict[str, Any]
) -> None:
    """Found by the fuzzing's second seed: an upload without a Content-Type header was a 415 the
    schema did not document, saying only ``Unsupported media type "" in request.``."""
    from registry.models import DatasetVersion
    from registry.tests.conftest import make_dataset

    user = people["ml_engineer"]
    token = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
    dataset = make_dataset(people, slug="typed")
    entries = Entry.objects.count()
    upload = f"/api/v1/datasets/{dataset.pk}/versions/"
    models = f"/api/v1/projects/{people['project'].slug}/models/"
    for url, body, content_type, message in (
        (upload, b'{"t": "b"}', "", "this operation takes multipart/form-data, not a body without a Content-Type header"),
        (upload, b'{"t": "b"}', "application/json", "this operation takes multipart/form-data, not a body of Content-Type 'application/json'"),
        (models, b"slug=m", "text/plain; charset=utf-8", "this operation takes application/json, not a body of Content-Type 'text/plain'"),
    ):  # fmt: skip
        response = client.post(url, data=body, content_type=content_type, **token)
        assert response.status_code == 415, response.content
        assert response.json()["error"] == {"code": "unsupported_media_type", "message": message, "fields": {}}
    assert Entry.objects.count() == entries and not DatasetVersion.objects.filter(dataset=dataset).exists()
    document = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    for path in ("/api/v1/datasets/{id}/versions/", "/api/v1/projects/{slug}/models/"):
        assert "Content-Type" in document["paths"][path]["post"]["responses"]["415"]["description"]


def test_errors_django_answers_itself_under_the_api_are_json() -> None:
    factory = RequestFactory()
    answer = internal_error(factory.get("/api/v1/approvals/"))
    assert answer.status_code == 500 and json.loads(answer.content)["error"]["code"] == "internal_error"
    assert internal_error(factory.get("/admin/"))["Content-Type"].startswith("text/html")
    # A host the service does not answer to is refused before any view: JSON under /api/.
    response = Client(HTTP_HOST="evil.example").get("/api/v1/me")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert Client(HTTP_HOST="evil.example").get("/admin/").headers["Content-Type"].startswith("text/html")
