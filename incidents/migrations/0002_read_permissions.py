"""Every role sees the incidents of its projects in the admin (the pages are read-only; their
forms call the services, which decide who may register, classify, report and close)."""

from django.db import migrations

from common.migration_ops import grant_view_permissions

ROLES = [
    "ml_engineer", "data_steward", "security_reviewer", "fairness_reviewer", "compliance_officer", "auditor",
    "platform_admin",
]  # fmt: skip


class Migration(migrations.Migration):
    dependencies = [("incidents", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [grant_view_permissions("incidents", ["incident"], ROLES)]
