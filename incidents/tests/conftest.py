"""An incident's world: the project of the ``people`` fixture and another one, each with an AI
system and a deployment (made through the registry's and serving's services)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from governance.roles import Role
from governance.services import project_create, project_role_grant


def make_deployment(project: Any, engineer: Any, tmp_path: Path) -> Any:
    from registry.models import ModelVersion
    from registry.services import model_create, model_version_register_folder
    from serving.services import deployment_request

    weights = tmp_path / f"weights-{project.slug}"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(project.slug.encode())
    model = model_create(actor=engineer, project=project, slug="m", name="M")
    with override_settings(REGISTRY_ALLOWED_ROOTS=[weights.resolve()]):
        model_version_register_folder(actor=engineer, model=model, folder=str(weights))
    return deployment_request(
        actor=engineer, model_version=ModelVersion.objects.get(model=model), name="assistant",
        environment="staging", target={}, guard={"mode": "off"},
    )  # fmt: skip


def make_system(project: Any, owner: Any, slug: str = "helpdesk") -> Any:
    # The systems app's services are written beside this app; the row is made directly until then.
    from systems.models import AISystem

    return AISystem.objects.create(
        project=project, slug=slug, name=slug.title(), purpose="answer customers", owner=owner, created_by=owner
    )


@pytest.fixture
def world(people: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    User = get_user_model()
    other = project_create(actor=people["system"], slug="other", name="Other")
    stranger = User.objects.create_user(username="other-engineer")
    project_role_grant(actor=people["system"], project=other, user=stranger, role=Role.ML_ENGINEER, reason="t")
    admin = User.objects.create_user(username="platform-admin")
    project_role_grant(
        actor=people["system"], project=people["project"], user=admin, role=Role.PLATFORM_ADMIN, reason="t"
    )
    return {
        **people,
        "platform_admin": admin,
        "other": other,
        "stranger": stranger,
        "deployment": make_deployment(people["project"], people["ml_engineer"], tmp_path),
        "other_deployment": make_deployment(other, stranger, tmp_path),
        "system_": make_system(people["project"], people["ml_engineer"]),
        "other_system": make_system(other, stranger),
    }
