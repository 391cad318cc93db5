"""The admin's "By project" filters offer only the projects whose rows the viewer may see: the
plain related filter listed every project's slug to every staff member."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse

from common.testing import admin_login
from governance.services import project_create

pytestmark = pytest.mark.django_db


def test_no_changelist_offers_a_project_the_viewer_holds_no_role_in(people: dict[str, Any], client: Any) -> None:
    project_create(actor=people["system"], slug="secret-merger", name="Secret Merger")
    admin_login(client, people["compliance_officer"])

    def by_project(spec: Any) -> bool:
        name = spec[0] if isinstance(spec, tuple) else spec
        return isinstance(name, str) and (name == "project" or name.endswith("__project"))

    filtered = [
        model for model, model_admin in admin.site._registry.items() if any(map(by_project, model_admin.list_filter))
    ]
    assert len(filtered) >= 9, filtered
    shown = []
    for model in filtered:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = client.get(url)
        if response.status_code == 200:
            assert b"secret-merger" not in response.content, url
            shown.append(url)
    assert len(shown) >= 8, shown  # the officer sees these lists; the check ran on each
