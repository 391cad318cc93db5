"""The training API's refusals of bad input, and the admin pages of runs and quotas."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audits.ledger.models import Entry
from common.testing import admin_login
from governance.services import api_token_create
from training.models import FineTuneRun
from training.services import gpu_quota_set
from training.tests.conftest import approve_run, request_run

pytestmark = pytest.mark.django_db


def _engineer(ready: dict[str, Any]) -> Client:
    token = api_token_create(actor=ready["system"], user=ready["ml_engineer"], name="t")[1]
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        ({"base_model_version": 999999}, 400, "base_model_version"),
        ({"dataset_versions": [999999]}, 400, "dataset_versions"),
        ({"hyperparameters": {"learning_rate": 0, "batch_size": 4, "max_steps": 5}}, 400, "learning_rate"),
        ({"hyperparameters": {"learning_rate": 1e-3, "batch_size": 400, "max_steps": 5}}, 400, "batch_size"),
        ({"gpu_type": "z80", "gpu_count": 1, "gpu_hours_estimate": 1}, 400, "gpu_type"),
        ({"gpu_type": "h100", "gpu_count": 1, "gpu_hours_estimate": 1}, 409, "quota"),
    ],
)
def test_bad_run_requests_get_a_clear_error_and_change_nothing(
    ready: dict[str, Any], change: dict[str, Any], status: int, named: str
) -> None:
    body = {
        "name": "tone", "base_model_version": ready["base"].pk, "dataset_versions": [ready["version"].pk],
        "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 5}, **change,
    }  # fmt: skip
    engineer = _engineer(ready)
    before = Entry.objects.count()
    response = engineer.post(
        f"/api/v1/projects/{ready['project'].slug}/fine-tune-runs/", body, content_type="application/json"
    )
    assert response.status_code == status, response.content
    assert named in response.json()["error"]["message"]
    assert FineTuneRun.objects.count() == 0 and Entry.objects.count() == before


def test_the_quota_shows_in_the_api(ready: dict[str, Any]) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=12, reason="pilot")
    request_run(ready, gpu_type="l4", gpu_count=1, gpu_hours_estimate=2.5)
    quota = _engineer(ready).get(f"/api/v1/projects/{ready['project'].slug}/gpu-quota").json()
    assert quota == {"project": "assistant", "quota": "12.00", "requested": "2.50", "used": "0.0000",
                     "available": "9.5000"}  # fmt: skip


def test_compliance_officers_see_runs_and_quotas_in_the_admin_and_cancel_through_the_service(
    ready: dict[str, Any], client: Client, security_events: list[dict[str, Any]]
) -> None:
    gpu_quota_set(actor=ready["platform-admin"], project=ready["project"], gpu_hours=12, reason="pilot")
    run = approve_run(ready, request_run(ready))
    admin_login(client, ready["compliance_officer"])
    listing = client.get("/admin/training/finetunerun/")
    assert listing.status_code == 200 and b"tone" in listing.content
    page = client.get(f"/admin/training/finetunerun/{run.pk}/change/")
    assert page.status_code == 200
    from governance.models import ApprovalRequest

    approval = ApprovalRequest.objects.get(subject_type="fine_tune_run", subject_id=str(run.pk))
    assert b"sha256:" in page.content
    assert f"/admin/governance/approvalrequest/{approval.pk}/change/".encode() in page.content
    assert client.get("/admin/training/gpuquota/").status_code == 200
    assert client.get("/admin/training/finetunerun/add/").status_code == 403
    # A platform admin cancels from the list: the same service as the API, ledgered.
    admin_login(client, ready["platform-admin"])
    response = client.post(
        "/admin/training/finetunerun/", {"action": "cancel", "_selected_action": [run.pk]}, follow=True
    )
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == "cancelled" and run.cancelled_by == ready["platform-admin"]
    assert Entry.objects.filter(action="fine_tune_run.cancelled", subject_id=str(run.pk)).count() == 1
    # Cancelling it again is refused, shown, and logged as the API logs a refusal (ASVS V16).
    again = client.post("/admin/training/finetunerun/", {"action": "cancel", "_selected_action": [run.pk]}, follow=True)
    assert again.status_code == 200 and f"Run {run.pk}: run {run.pk} is cancelled".encode() in again.content
    denied = [e for e in security_events if e["event"] == "request.denied"]
    assert [(e["fine_tune_run"], e["user_id"], e["status"], e["path"]) for e in denied] == [
        (run.pk, ready["platform-admin"].pk, 409, "/admin/training/finetunerun/")
    ]
    assert Entry.objects.filter(action="fine_tune_run.cancelled", subject_id=str(run.pk)).count() == 1


def test_the_tiny_model_command_registers_a_base_through_the_services(ready: dict[str, Any]) -> None:
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("tiny_model", "--project", "assistant", stdout=out)
    assert "assistant/tiny-gpt2 v1 registered: sha256:" in out.getvalue()
    call_command("tiny_model", "--project", "assistant", stdout=out)  # same seed, same weights
    assert "already registered" in out.getvalue()
    assert Entry.objects.filter(action="model_version.registered", subject_type="model_version").count() == 2
    with pytest.raises(CommandError, match="no project 'nope'"):
        call_command("tiny_model", "--project", "nope")
