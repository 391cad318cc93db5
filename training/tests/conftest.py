"""A project ready to fine-tune: a tiny base model, a scanned dataset version approved for
training, a requester and a second ML engineer to approve, all made through the services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from governance.roles import Role
from governance.services import approval_request_decide, approval_request_submit, project_role_grant
from registry.models import PiiScan
from registry.services import dataset_version_upload, model_create, model_version_register_folder, pii_scan_run
from registry.tests.conftest import make_dataset
from registry.tiny_model import build_tiny_gpt2

PATTERN_ONLY = {"PII_NLP_MODEL": "blank", "PII_ENTITIES": ["EMAIL_ADDRESS"], "PII_SCAN_PROCESSES": 1}
TEXTS = [f"ticket {i}: the order shipped on day {i % 7} and the customer was happy" for i in range(40)]


def upload_approved_version(people: dict[str, Any], dataset: Any, texts: list[str]) -> Any:
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    # In a transactional test a live Celery worker would claim the scan once the upload commits: it
    # goes to a queue no worker reads, and runs here.
    with override_settings(PII_SCAN_QUEUE="training-tests"):
        version, _ = dataset_version_upload(actor=people["ml_engineer"], dataset=dataset, filename="t.jsonl", data=data)
    with override_settings(**PATTERN_ONLY):
        pii_scan_run(scan_id=PiiScan.objects.get(version=version).pk, actor=people["system"])
    request = approval_request_submit(
        actor=people["ml_engineer"], subject_type="dataset_version", subject_id=str(version.pk),
        action="dataset_version.use_for_training",
    )  # fmt: skip
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")
    version.refresh_from_db()
    return version


@pytest.fixture
def ready(people: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    users = get_user_model().objects
    for name, role in (("ml-engineer-2", Role.ML_ENGINEER), ("platform-admin", Role.PLATFORM_ADMIN)):
        user = users.create_user(username=name)
        project_role_grant(actor=people["system"], project=people["project"], user=user, role=role, reason="setup")
        people[name] = users.get(pk=user.pk)
    base_folder = build_tiny_gpt2(tmp_path / "imports" / "tiny")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        model = model_create(actor=people["ml_engineer"], project=people["project"], slug="tiny", name="Tiny")
        base, _ = model_version_register_folder(actor=people["ml_engineer"], model=model, folder=str(base_folder))
    version = upload_approved_version(people, make_dataset(people, slug="tickets"), TEXTS)
    return {**people, "base": base, "version": version}


def request_run(ready: dict[str, Any], **overrides: Any) -> Any:
    from training.services import fine_tune_run_request

    arguments: dict[str, Any] = {
        "actor": ready["ml_engineer"], "project": ready["project"], "name": "tone", "base": ready["base"],
        "dataset_versions": [ready["version"]],
        "hyperparameters": {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 12, "seed": 1},
    }  # fmt: skip
    arguments.update(overrides)
    return fine_tune_run_request(**arguments)


def approve_run(ready: dict[str, Any], run: Any) -> Any:
    """Submit (the requester) and approve (a second ML engineer, and a platform admin when the
    policy asks for one)."""
    request = approval_request_submit(
        actor=ready["ml_engineer"], subject_type="fine_tune_run", subject_id=str(run.pk),
        action="fine_tune_run.execute",
    )  # fmt: skip
    for approver in ("ml-engineer-2", "platform-admin"):
        request.refresh_from_db()
        if request.state == "pending":
            approval_request_decide(actor=ready[approver], request_id=request.pk, decision="approve", reason="ok")
    run.refresh_from_db()
    return run


@pytest.fixture
def elsewhere(ready: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A second project, ``elsewhere``, that none of ``ready``'s people holds a role in: a dataset
    version, a model version and a prompt template of its own, made by its own ML engineer."""
    from governance.roles import Role
    from governance.services import project_create
    from registry.services import dataset_create, prompt_template_register

    project = project_create(actor=ready["system"], slug="elsewhere", name="Elsewhere")
    owner = get_user_model().objects.create_user(username="elsewhere-engineer")
    for role in (Role.ML_ENGINEER, Role.DATA_STEWARD):
        project_role_grant(actor=ready["system"], project=project, user=owner, role=role, reason="setup")
    owner = get_user_model().objects.get(pk=owner.pk)
    dataset = dataset_create(
        actor=owner, project=project, slug="private", name="Private", purpose="their own work",
        lawful_basis="legitimate_interests", retention_days=30, source="their export", data_steward=owner,
        data_subject_categories=["customers"], personal_data_categories=["contact details"],
    )  # fmt: skip
    data = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
    version, _ = dataset_version_upload(actor=owner, dataset=dataset, filename="p.jsonl", data=data)
    with override_settings(REGISTRY_ALLOWED_ROOTS=[(tmp_path / "imports").resolve()]):
        model = model_create(actor=owner, project=project, slug="secret", name="Secret")
        model_version, _ = model_version_register_folder(
            actor=owner, model=model, folder=str(tmp_path / "imports" / "tiny")
        )
    template, _ = prompt_template_register(
        actor=owner, project=project, slug="theirs", body="about {topic}", intended_use="their evaluations"
    )
    return {"project": project, "owner": owner, "dataset_version": version, "model_version": model_version,
            "prompt_template": template}  # fmt: skip


def run_actions(run: Any) -> list[str]:
    """The run's ledger actions, in order."""
    from audits.ledger.models import Entry

    return list(
        Entry.objects.filter(subject_type="fine_tune_run", subject_id=str(run.pk))
        .order_by("index")
        .values_list("action", flat=True)
    )


def run_payload(run: Any, action: str) -> dict[str, Any]:
    """The payload of the run's latest ``action`` entry."""
    from audits.ledger.models import Entry

    body = Entry.objects.filter(subject_type="fine_tune_run", subject_id=str(run.pk), action=action).last().body
    return json.loads(bytes(body))["payload"]
