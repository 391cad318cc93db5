"""The optimisation runs' API, client-level (no worker, no quantisation): a request alone and one
submitted for approval in the same call, bad input refused naming the field with nothing changed,
who may do what, start-again of a failed run, and a list whose query count does not grow with it.
The quantisation itself, through the real worker, is in ``test_optimisation_worker``."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audits.ledger.models import Entry
from governance.services import api_token_create, approval_request_decide
from training.models import OptimisationRun, RunState
from training.tests.conftest import elsewhere  # noqa: F401  (the fixture, shared)
from training.tests.optimising import actions, evaluation_set, payload

pytestmark = pytest.mark.django_db


def _client(ready: dict[str, Any], who: str) -> Client:
    user = ready[who]
    return Client(HTTP_AUTHORIZATION=f"Token {api_token_create(actor=ready['system'], user=user, name='t')[1]}")


@pytest.fixture
def world(ready: dict[str, Any]) -> dict[str, Any]:
    return {**ready, "evaluation": evaluation_set(ready), "engineer": _client(ready, "ml_engineer")}


def _post(world: dict[str, Any], client: Client | None = None, **body: Any) -> Any:
    body = {"source": world["base"].pk, "evaluation_set": world["evaluation"].pk, **body}
    return (client or world["engineer"]).post(
        f"/api/v1/projects/{world['project'].slug}/optimisation-runs/", body, content_type="application/json"
    )


def _approval_entries(run_pk: int) -> list[str]:
    return list(
        Entry.objects.filter(subject_type="optimisation_run", subject_id=str(run_pk), action__startswith="approval.")
        .order_by("index")
        .values_list("action", flat=True)
    )


def test_a_request_alone_then_submitted(world: dict[str, Any]) -> None:
    response = _post(world, text_field="text", max_length=64)
    assert response.status_code == 201, response.content
    body = response.json()
    run = OptimisationRun.objects.get(pk=body["id"])
    assert body["state"] == "requested" and body["approvals"] == [] and body["max_length"] == 64
    assert body["source"] == world["base"].pk and body["source_weights_digest"] == world["base"].weights_digest
    assert body["method"] == "onnx_dynamic_int8" and body["metrics"] == {} and body["output"] is None
    assert body["digest"].startswith("sha256:") and body["requested_by"] == "ml-engineer"
    assert actions(run) == ["optimisation_run.requested"] and _approval_entries(run.pk) == []
    assert payload(run, "optimisation_run.requested")["max_length"] == 64

    submitted = world["engineer"].post(
        f"/api/v1/optimisation-runs/{run.pk}/submit", {"action": "optimisation_run.execute"},
        content_type="application/json",
    )  # fmt: skip
    assert submitted.status_code == 201, submitted.content
    assert submitted.json()["action"] == "optimisation_run.execute"
    assert _approval_entries(run.pk) == ["approval.requested"]
    detail = world["engineer"].get(f"/api/v1/optimisation-runs/{run.pk}").json()
    assert [a["id"] for a in detail["approvals"]] == [submitted.json()["id"]]


def test_a_request_submitted_in_the_same_call_is_queued_once_approved(world: dict[str, Any]) -> None:
    response = _post(world, submit=True, comment="int8 for the edge boxes")
    assert response.status_code == 201, response.content
    body = response.json()
    run = OptimisationRun.objects.get(pk=body["id"])
    [approval] = body["approvals"]
    assert approval["action"] == "optimisation_run.execute" and approval["state"] == "pending"
    assert actions(run) == ["optimisation_run.requested"] and _approval_entries(run.pk) == ["approval.requested"]
    approval_request_decide(actor=world["ml-engineer-2"], request_id=approval["id"], decision="approve", reason="ok")
    detail = world["engineer"].get(f"/api/v1/optimisation-runs/{run.pk}").json()
    assert detail["state"] == "queued" and detail["attempt"] == 1 and detail["queued_at"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"source": 999999}, "source"),
        ({"evaluation_set": 999999}, "evaluation_set"),
        ({"method": "gguf_q4"}, "method"),
        ({"max_length": 1}, "max_length"),
        ({"max_length": "64"}, "max_length"),
        ({"text_field": "answer"}, "text_field"),
        ({"text_field": 5}, "text_field"),
        ({"state": "succeeded"}, "state"),
        ({"submit": True, "comment": 7}, "comment"),
    ],
)
def test_bad_requests_are_refused_naming_the_field_and_change_nothing(
    world: dict[str, Any], change: dict[str, Any], named: str
) -> None:
    before = Entry.objects.count()
    response = _post(world, **change)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and named in error["fields"] and named in error["message"]
    assert not OptimisationRun.objects.exists() and Entry.objects.count() == before


def test_another_projects_objects_are_no_objects_and_roles_are_checked(
    world: dict[str, Any],
    elsewhere: dict[str, Any],  # noqa: F811
) -> None:
    auditor, steward = _client(world, "auditor"), _client(world, "data_steward")
    before = Entry.objects.count()
    for change, named in (
        ({"source": elsewhere["model_version"].pk}, "source"),
        ({"evaluation_set": elsewhere["dataset_version"].pk}, "evaluation_set"),
    ):
        response = _post(world, **change)
        assert response.status_code == 400 and named in response.json()["error"]["fields"], response.content
    assert _post(world, client=auditor).status_code == 403
    assert _post(world, client=steward).status_code == 403
    assert not OptimisationRun.objects.exists() and Entry.objects.count() == before

    run_pk = _post(world).json()["id"]
    stranger = _client({**world, "owner": elsewhere["owner"]}, "owner")
    assert stranger.get(f"/api/v1/optimisation-runs/{run_pk}").status_code == 404
    assert stranger.post(f"/api/v1/optimisation-runs/{run_pk}/start").status_code == 404
    assert stranger.get(f"/api/v1/projects/{world['project'].slug}/optimisation-runs/").status_code == 404
    assert auditor.get(f"/api/v1/optimisation-runs/{run_pk}").status_code == 200
    assert auditor.post(f"/api/v1/optimisation-runs/{run_pk}/start").status_code == 403


def test_start_again_queues_a_failed_run_and_refuses_an_unapproved_one(world: dict[str, Any]) -> None:
    body = _post(world, submit=True).json()
    run = OptimisationRun.objects.get(pk=body["id"])
    unapproved = _post(world).json()["id"]
    refused = world["engineer"].post(f"/api/v1/optimisation-runs/{unapproved}/start")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_approved"
    not_failed = world["engineer"].post(f"/api/v1/optimisation-runs/{run.pk}/start", {"reason": "x"},
                                        content_type="application/json")  # fmt: skip
    assert not_failed.status_code == 400 and "reason" in not_failed.json()["error"]["fields"]

    approval_request_decide(
        actor=world["ml-engineer-2"], request_id=body["approvals"][0]["id"], decision="approve", reason="ok"
    )
    # As a worker whose attempt failed would have left it (no worker runs here).
    OptimisationRun.objects.filter(pk=run.pk).update(state=RunState.FAILED, failure_reason="optimisation failed: x")
    response = world["engineer"].post(f"/api/v1/optimisation-runs/{run.pk}/start")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "queued" and response.json()["attempt"] == 2
    assert response.json()["failure_reason"] == ""
    assert actions(run) == ["optimisation_run.requested", "optimisation_run.queued", "optimisation_run.queued"]
    assert payload(run, "optimisation_run.queued")["why"] == "started again"
    again = world["engineer"].post(f"/api/v1/optimisation-runs/{run.pk}/start")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_not_startable"


def test_cancel_takes_a_reason_and_refuses_a_running_run_saying_why(world: dict[str, Any]) -> None:
    running, requested = _post(world).json()["id"], _post(world).json()["id"]
    OptimisationRun.objects.filter(pk=running).update(state=RunState.RUNNING, attempt=1, claimed_by="gpu-1:77")
    before = Entry.objects.count()
    for run_pk, body, status, code in (
        (requested, {}, 400, "invalid_input"),
        (requested, {"reason": 5}, 400, "invalid_input"),
        (running, {"reason": "not needed"}, 409, "run_running"),
    ):
        response = world["engineer"].post(
            f"/api/v1/optimisation-runs/{run_pk}/cancel", body, content_type="application/json"
        )
        assert response.status_code == status and response.json()["error"]["code"] == code, response.content
    assert "gpu-1:77" in response.json()["error"]["message"] and Entry.objects.count() == before
    assert (
        _client(world, "auditor")
        .post(f"/api/v1/optimisation-runs/{requested}/cancel", {"reason": "x"}, content_type="application/json")
        .status_code
        == 403
    )
    done = world["engineer"].post(
        f"/api/v1/optimisation-runs/{requested}/cancel", {"reason": "not needed"}, content_type="application/json"
    )
    assert done.status_code == 200 and done.json()["state"] == "cancelled", done.content
    assert actions(OptimisationRun.objects.get(pk=requested))[-1] == "optimisation_run.cancelled"


def test_the_list_shows_the_figures_and_its_query_count_is_flat(world: dict[str, Any]) -> None:
    path = f"/api/v1/projects/{world['project'].slug}/optimisation-runs/"
    first = _post(world).json()["id"]
    figures = {"fp32": {"perplexity": 10.0, "size_bytes": 400}, "int8": {"perplexity": 10.1, "size_bytes": 100},
               "perplexity_delta": 0.01}  # fmt: skip
    OptimisationRun.objects.filter(pk=first).update(state=RunState.SUCCEEDED, metrics=figures)
    auditor = _client(world, "auditor")
    auditor.get(path)  # once-a-while work (the token's last use) out of the count
    with CaptureQueriesContext(connection) as one:
        assert auditor.get(path).json()["count"] == 1
    for _ in range(3):
        _post(world)
    with CaptureQueriesContext(connection) as four:
        page = auditor.get(path).json()
    assert page["count"] == 4 and len(four.captured_queries) == len(one.captured_queries)
    assert page["results"][-1]["id"] == first and page["results"][-1]["metrics"]["perplexity_delta"] == 0.01


def test_the_admin_requests_a_quantisation_through_the_service_and_shows_its_figures(world: dict[str, Any]) -> None:
    from common.testing import admin_login

    browser = Client()
    admin_login(browser, world["ml_engineer"])
    form = {"source": world["base"].pk, "evaluation_set": world["evaluation"].pk, "method": "onnx_dynamic_int8",
            "text_field": "nothing-here", "max_length": 128, "comment": "for the edge boxes"}  # fmt: skip
    refused = browser.post("/admin/training/optimisationrun/add/", form)
    assert refused.status_code == 200 and b"nothing-here" in refused.content and not OptimisationRun.objects.exists()
    response = browser.post("/admin/training/optimisationrun/add/", {**form, "text_field": "text"})
    assert response.status_code == 302, response.content
    run = OptimisationRun.objects.get()
    assert actions(run) == ["optimisation_run.requested"] and _approval_entries(run.pk) == ["approval.requested"]
    figures = {"fp32": {"perplexity": 10.0, "size_bytes": 4_000_000, "latency_ms_p50": 2.0},
               "int8": {"perplexity": 10.1, "size_bytes": 1_000_000, "latency_ms_p50": 1.0},
               "perplexity_delta": 0.01}  # fmt: skip
    OptimisationRun.objects.filter(pk=run.pk).update(state=RunState.SUCCEEDED, metrics=figures)
    listed = browser.get("/admin/training/optimisationrun/").content.decode()
    assert "10.1000" in listed and "+1.00%" in listed and "4.00 → 1.00 MB" in listed
    assert browser.get(f"/admin/training/optimisationrun/{run.pk}/change/").status_code == 200


def test_the_admin_cancels_a_run_no_worker_started_and_says_why_it_cannot_cancel_a_running_one(
    world: dict[str, Any],
) -> None:
    from common.testing import admin_login

    waiting, running = _post(world).json()["id"], _post(world).json()["id"]
    OptimisationRun.objects.filter(pk=running).update(state=RunState.RUNNING, attempt=1, claimed_by="gpu-1:77")
    browser = Client()
    admin_login(browser, world["ml_engineer"])
    response = browser.post(
        "/admin/training/optimisationrun/", {"action": "cancel", "_selected_action": [waiting, running]}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"optimisation run {running} is running on gpu-1:77 and cannot be stopped midway" in page
    states = dict(OptimisationRun.objects.values_list("pk", "state"))
    assert states == {waiting: "cancelled", running: "running"}
    [entry] = Entry.objects.filter(action="optimisation_run.cancelled")
    assert entry.subject_id == str(waiting)
