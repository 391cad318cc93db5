"""Reviewers, auditors and platform admins see runs and quotas in the admin (read-only pages)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = ["auditor", "compliance_officer", "security_reviewer", "fairness_reviewer", "platform_admin"]
MODELS = ["finetunerun", "gpuquota"]


def forwards(apps, schema_editor):
    training = apps.get_app_config("training")
    training.models_module = True  # permissions are made after migrations; make training's now
    create_permissions(training, apps=apps, verbosity=0)
    training.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in MODELS]
    permissions = list(Permission.objects.filter(content_type__app_label="training", codename__in=codenames))
    for name in READERS:
        Group.objects.get(name=name).permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("training", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
