"""The demo's organisation profile: it passes the service's checks and leaves the reports nothing
missing (``seed_demo`` fills it in through ``organisation_profile_update``)."""

from __future__ import annotations

from typing import Any

import pytest

from demo.management.commands.seed_demo import DEMO_PROFILE
from governance.services import organisation_profile_update

pytestmark = pytest.mark.django_db


def test_the_demo_profile_is_valid_and_complete(people: dict[str, Any]) -> None:
    profile = organisation_profile_update(actor=people["system"], **DEMO_PROFILE)
    assert profile.missing_for_reports() == [] and profile.ledger_index is not None
