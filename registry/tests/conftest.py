from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from registry.models import Dataset
from registry.services import dataset_create

User = get_user_model()


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
