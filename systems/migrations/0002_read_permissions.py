"""Every role of a project reads its AI systems and their classifications in the admin, as the API
shows them to every member. The pages stay scoped to the person's projects and read-only; changes
go through the services (the register and questionnaire forms call them)."""

from django.db import migrations

from common.migration_ops import grant_view_permissions

ROLES = ["ml_engineer", "data_steward", "security_reviewer", "fairness_reviewer", "compliance_officer", "auditor",
         "platform_admin"]  # fmt: skip


class Migration(migrations.Migration):
    dependencies = [("systems", "0001_initial"), ("governance", "0017_pii_list_entries_removed_kept")]

    operations = [grant_view_permissions("systems", ["aisystem", "aisystemclassification"], ROLES)]
