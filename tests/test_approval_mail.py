"""The e-mail that tells approvers a request waits for them links to the request's page in the
admin, by its absolute address (GOV_PUBLIC_URL): a mail reader has no base to resolve a path by."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.test_approvals import _submit, _version


@pytest.mark.django_db
def test_the_approvers_mail_links_to_the_requests_admin_page(
    people: dict[str, Any], mailoutbox: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    people["data_steward"].email = "steward@example.org"
    people["data_steward"].save()
    with override_settings(GOV_PUBLIC_URL="https://governance.example.org"):
        with django_capture_on_commit_callbacks(execute=True):
            request = _submit(people, _version(people))
    [mail] = mailoutbox
    link = f"https://governance.example.org/admin/governance/approvalrequest/{request.pk}/change/"
    assert f"Request #{request.pk}: {link}\n" in mail.body
    assert "/api/v1/" not in mail.body
