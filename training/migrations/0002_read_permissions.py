"""Reviewers, auditors and platform admins see runs and quotas in the admin (read-only pages)."""

from django.db import migrations

from common.migration_ops import grant_view_permissions


class Migration(migrations.Migration):
    dependencies = [("training", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [
        grant_view_permissions(
            "training",
            ["finetunerun", "gpuquota"],
            ["auditor", "compliance_officer", "security_reviewer", "fairness_reviewer", "platform_admin"],
        )
    ]
