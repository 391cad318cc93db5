from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME
from governance.roles import Role
from governance.services import project_create, project_role_grant
from registry.models import Dataset
from registry.services import dataset_create

User = get_user_model()


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    system = User.objects.get(username=SYSTEM_USERNAME)
    project = project_create(actor=system, slug="assistant", name="Assistant")
    cast: dict[str, Any] = {"system": system, "project": project}
    for role in (Role.DATA_STEWARD, Role.ML_ENGINEER, Role.COMPLIANCE_OFFICER, Role.AUDITOR):
        user = User.objects.create_user(username=role.value.replace("_", "-"))
        project_role_grant(actor=system, project=project, user=user, role=role)
        cast[role.value] = User.objects.get(pk=user.pk)
    return cast


def make_dataset(people: dict[str, Any], slug: str = "tickets") -> Dataset:
    return dataset_create(
        actor=people["data_steward"],
        project=people["project"],
        slug=slug,
        name="Support tickets",
        purpose="fine-tune the support assistant",
        lawful_basis="legitimate_interests",
        retention_days=365,
        source="helpdesk export",
        data_steward=people["data_steward"],
        data_subject_categories=["customers"],
        personal_data_categories=["contact details"],
    )


@pytest.fixture
def dataset(people: dict[str, Any]) -> Dataset:
    return make_dataset(people)
