"""Compliance officers, auditors and platform admins see report runs in the admin."""

from django.db import migrations

from common.migration_ops import grant_view_permissions


class Migration(migrations.Migration):
    dependencies = [("reports", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [grant_view_permissions("reports", ["reportrun"], ["auditor", "compliance_officer", "platform_admin"])]
