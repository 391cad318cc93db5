"""Reviewers, auditors and platform admins see scans and evaluations in the admin (read-only)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = [
    "auditor", "compliance_officer", "security_reviewer", "fairness_reviewer", "platform_admin", "ml_engineer",
]  # fmt: skip
MODELS = ["securityscan", "biasevaluation"]


def forwards(apps, schema_editor):
    checks = apps.get_app_config("checks")
    checks.models_module = True  # permissions are made after migrations; make these now
    create_permissions(checks, apps=apps, verbosity=0)
    checks.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in MODELS]
    permissions = list(Permission.objects.filter(content_type__app_label="checks", codename__in=codenames))
    for name in READERS:
        Group.objects.get(name=name).permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("checks", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
