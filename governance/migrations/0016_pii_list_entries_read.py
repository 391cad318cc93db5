"""Every role of a project reads its PII lists in the admin, as the API shows them to every member:
what its scans are told not to report (and what to report besides) is part of every finding's
meaning. The pages stay scoped to the person's projects and read-only; changes go through the
services."""

from django.db import migrations

from common.migration_ops import grant_view_permissions

ROLES = ["ml_engineer", "data_steward", "security_reviewer", "fairness_reviewer", "compliance_officer", "auditor",
         "platform_admin"]  # fmt: skip


class Migration(migrations.Migration):
    dependencies = [("governance", "0015_pii_list_entries")]

    operations = [grant_view_permissions("governance", ["piilistentry"], ROLES)]
