"""The API's schema and docs pages (``/api/schema/``, ``/api/docs/``) need a signed-in caller where
``API_DOCS_REQUIRE_SIGN_IN`` is on, which production's settings make the default; the embedded
default (and the test suite) serves them to anyone."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from conftest import manage_in
from governance.services import api_token_create
from tests.test_production_settings import _production_env

SCHEMA_JSON = {"HTTP_ACCEPT": "application/vnd.oai.openapi+json"}


@pytest.mark.django_db
def test_signed_in_callers_only_read_the_schema_and_docs_where_required(people: dict[str, Any]) -> None:
    user = people["auditor"]
    token = {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
    client = Client()
    assert client.get("/api/schema/", **SCHEMA_JSON).status_code == 200  # the embedded default: open
    assert client.get("/api/docs/").status_code == 200
    with override_settings(API_DOCS_REQUIRE_SIGN_IN=True):
        schema = client.get("/api/schema/", **SCHEMA_JSON)
        assert schema.status_code == 401 and schema.json()["error"]["code"] == "not_authenticated"
        docs = client.get("/api/docs/")  # a person with a browser: the admin's sign-in, then back
        assert docs.status_code == 302 and docs["Location"] == "/admin/login/?next=/api/docs/"
        assert client.get("/api/schema/", **SCHEMA_JSON, **token).json()["info"]["title"]
        assert client.get("/api/docs/", **token).status_code == 200
        wrong = {"HTTP_AUTHORIZATION": "Token gov_nope_nope"}
        assert client.get("/api/schema/", **SCHEMA_JSON, **wrong).status_code == 401


@pytest.mark.parametrize(("value", "expected"), [(None, "True"), ("off", "False")])
def test_production_requires_sign_in_unless_told_otherwise(tmp_path: Path, value: str | None, expected: str) -> None:
    env = _production_env(tmp_path, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    env.pop("API_DOCS_REQUIRE_SIGN_IN", None)
    if value is not None:
        env["API_DOCS_REQUIRE_SIGN_IN"] = value
    shown = manage_in(env, "shell", "-c", "from django.conf import settings; print(settings.API_DOCS_REQUIRE_SIGN_IN)")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1] == expected
