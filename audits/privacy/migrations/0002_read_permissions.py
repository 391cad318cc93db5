"""Compliance officers and auditors see data-subject requests, legal holds and model reviews of
their projects in the admin (the pages are read-only; actions call the services)."""

from django.db import migrations

from common.migration_ops import grant_view_permissions


class Migration(migrations.Migration):
    dependencies = [("privacy", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [
        grant_view_permissions(
            "privacy", ["datasubjectrequest", "legalhold", "modelreview"], ["auditor", "compliance_officer"]
        )
    ]
