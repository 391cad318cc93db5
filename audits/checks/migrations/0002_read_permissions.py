"""Reviewers, auditors, ML engineers and platform admins see scans and evaluations in the admin (read-only)."""

from django.db import migrations

from common.migration_ops import grant_view_permissions


class Migration(migrations.Migration):
    dependencies = [("checks", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [
        grant_view_permissions(
            "checks",
            ["securityscan", "biasevaluation"],
            ["auditor", "compliance_officer", "security_reviewer", "fairness_reviewer", "platform_admin", "ml_engineer"],
        )
    ]
