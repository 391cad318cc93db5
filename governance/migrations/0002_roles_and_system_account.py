"""The role groups and the ``system`` service account through which the service itself acts."""

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations

# Frozen here on purpose: a migration must not change when governance/roles.py does.
ROLES = [
    "ml_engineer",
    "data_steward",
    "security_reviewer",
    "fairness_reviewer",
    "compliance_officer",
    "auditor",
    "platform_admin",
]


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    ServiceAccount = apps.get_model("governance", "ServiceAccount")
    groups = {name: Group.objects.get_or_create(name=name)[0] for name in ROLES}
    system, _ = User.objects.get_or_create(
        username="system", defaults={"password": make_password(None), "is_staff": False, "is_superuser": False}
    )
    system.groups.add(groups["platform_admin"])
    ServiceAccount.objects.get_or_create(
        user=system, defaults={"description": "The service itself: seeds, scheduled jobs, workers' reports."}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
