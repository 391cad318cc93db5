"""Every list endpoint pages the same way: one base view (``common.api.ListView``), ``?limit=`` and
``?offset=``, the envelope ``{"count", "next", "previous", "results"}``, and a query count that does
not grow with the page. The endpoints come from the URL resolver and the schema (as in the
permission matrix), so a new list that answers a bare array fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver

from audits.ledger.services import checkpoint_create
from common.api import ListView
from governance.services import api_token_create
from tests.test_permission_matrix import AUTHENTICATED, MATRIX, MEMBERS, PUBLIC, _path, _scenario, openapi_path

ENVELOPE = {"count", "next", "previous", "results"}


def _views() -> dict[str, Any]:
    """Route -> view class, for every route under api/."""
    found: dict[str, Any] = {}

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                found[route] = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)

    walk(get_resolver().url_patterns, "")
    return found


def _answer_schema(document: dict[str, Any], route: str) -> dict[str, Any]:
    operation = document["paths"][openapi_path(route)]["get"]
    content = operation["responses"].get("200", {}).get("content", {})
    return content.get("application/json", {}).get("schema", {})


@pytest.mark.django_db
def test_every_list_is_a_list_view_and_documents_its_page(client: Client) -> None:
    document = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    lists, bare = [], []
    for route, view in _views().items():
        if not hasattr(view, "get") or route.startswith(("api/schema", "api/docs")):
            continue
        answer = _answer_schema(document, route)
        if answer.get("type") == "array":
            bare.append(route)
        if issubclass(view, ListView):
            lists.append(route)
            assert answer.get("$ref", "").startswith("#/components/schemas/Paginated"), route
            names = {p["name"] for p in document["paths"][openapi_path(route)]["get"]["parameters"]}
            assert {"limit", "offset"} <= names, route
    assert bare == [], "GET endpoints that answer a bare array instead of a page"
    assert len(lists) >= 19, lists


def _second_rows(own: dict[str, Any], people: dict[str, Any], members: dict[str, Any]) -> None:
    """A second row in most lists: another project with the same members (projects, approvals,
    reviews, privacy lists, reports), and a second template, model version, run, scan, evaluation,
    deployment and request in the first one."""
    import datetime as dt
    import tempfile
    from pathlib import Path

    from django.test import override_settings
    from django.utils import timezone

    from audits.checks.models import BiasEvaluation
    from audits.checks.services import bias_evaluation_request, security_scan_request
    from audits.privacy.services import dsr_receive
    from audits.reports.services import report_request
    from registry.models import Model, ModelVersion, Project
    from registry.services import model_version_register_folder, prompt_template_register
    from serving.services import deployment_request
    from training.models import FineTuneRun
    from training.services import fine_tune_run_request

    _scenario("own2", people, members)
    engineer, officer = members["ml_engineer"], members["compliance_officer"]
    project, model_version = Project.objects.get(slug=own["slug"]), ModelVersion.objects.get(pk=own["model_version"])
    prompt_template_register(actor=engineer, project=project, slug="p2", body="y", intended_use="u")
    weights = Path(tempfile.mkdtemp(prefix="weights-"))
    (weights / "model.safetensors").write_bytes(b"second")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
        model_version_register_folder(actor=engineer, model=Model.objects.get(pk=own["model"]), folder=str(weights))
    run = FineTuneRun.objects.get(pk=own["fine_tune_run"])
    fine_tune_run_request(
        actor=engineer, project=project, name="r2", base=model_version, dataset_versions=list(run.dataset_versions.all()),
        text_field="t", hyperparameters={"learning_rate": 1e-3, "batch_size": 1, "max_steps": 1},
    )  # fmt: skip
    security_scan_request(actor=engineer, model_version=model_version, profile_name="smoke")
    evaluation = BiasEvaluation.objects.get(pk=own["evaluation"])
    bias_evaluation_request(
        actor=engineer, model_version=model_version, dataset_version=evaluation.dataset_version,
        prompt_template=evaluation.prompt_template, label_field="y", sensitive_feature="g",
        label_mapping={"yes": "1"}, profile_name="default",
    )  # fmt: skip
    deployment_request(
        actor=engineer, model_version=model_version, name="second", environment="staging", target={},
        guard={"mode": "off"},
    )  # fmt: skip
    dsr_receive(
        actor=officer, project=project, regime="gdpr", kind="access", channel="email", received_at=timezone.now(),
        identifiers=[{"kind": "email", "value": "bo@example.org"}],
    )  # fmt: skip
    report_request(
        actor=officer, kind="governance_audit", project=project, period_start=dt.date(2026, 2, 1),
        period_end=dt.date(2026, 2, 28),
    )  # fmt: skip


def _reader(route: str) -> str:
    """A role that may read the list in its own project, preferring one that sees its rows."""
    allowed, _ = MATRIX[(route, "GET")]
    if allowed in (PUBLIC, AUTHENTICATED):
        return "compliance_officer"
    return "compliance_officer" if "compliance_officer" in allowed else allowed[0]


@pytest.mark.django_db
def test_every_list_answers_the_page_envelope_with_a_flat_query_count(client: Client, people: dict[str, Any]) -> None:
    User = get_user_model()
    members = {role: User.objects.create_user(username=f"m-{role}") for role in MEMBERS}
    own = _scenario("own", people, members)
    _second_rows(own, people, members)
    checkpoint_create()
    tokens = {
        role: {"HTTP_AUTHORIZATION": f"Token {api_token_create(actor=user, user=user, name='t')[1]}"}
        for role, user in members.items()
    }
    routes = sorted(route for route, view in _views().items() if issubclass(view, ListView))
    failures, several = [], []
    for route in routes:
        path, auth = _path(route, own), tokens[_reader(route)]
        client.get(path, **auth)  # once-a-while work (a token's last use, a rate-limit window) out of the count
        with CaptureQueriesContext(connection) as one:
            first = client.get(path, {"limit": 1}, **auth)
        with CaptureQueriesContext(connection) as many:
            whole = client.get(path, {"limit": 1000}, **auth)
        if first.status_code != 200 or whole.status_code != 200:
            failures.append(f"{route}: {first.status_code}, {whole.status_code}")
            continue
        page, body = first.json(), whole.json()
        if set(page) != ENVELOPE or set(body) != ENVELOPE:
            failures.append(f"{route}: answers {sorted(body)}")
            continue
        if (
            len(page["results"]) > 1
            or len(body["results"]) != body["count"]
            or (page["next"] is None) != (body["count"] <= 1)
        ):
            failures.append(f"{route}: count {body['count']}, pages of {len(page['results'])}, {len(body['results'])}")
        if body["count"] > 1:
            several.append(route)
            if len(many.captured_queries) != len(one.captured_queries):
                failures.append(f"{route}: {len(one)} queries for 1 row, {len(many)} for {body['count']} rows")
        refused = client.get(path, {"limit": 0}, **auth)
        if refused.status_code != 400 or "limit" not in refused.json()["error"]["fields"]:
            failures.append(f"{route}: ?limit=0 answered {refused.status_code}")
    assert failures == [], "\n".join(failures)
    assert len(several) >= 18, f"too few lists hold two rows or more for the query count to mean much: {several}"
