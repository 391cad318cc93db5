"""Reviewers and auditors see the registry in the admin (read-only pages)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = ["auditor", "compliance_officer", "data_steward", "security_reviewer", "fairness_reviewer", "platform_admin"]
MODELS = ["dataset", "datasetversion", "piiscan", "model", "modelversion", "prompttemplate"]


def forwards(apps, schema_editor):
    registry = apps.get_app_config("registry")
    registry.models_module = True  # permissions are made after migrations; make the registry's now
    create_permissions(registry, apps=apps, verbosity=0)
    registry.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in MODELS]
    permissions = list(Permission.objects.filter(content_type__app_label="registry", codename__in=codenames))
    for name in READERS:
        Group.objects.get(name=name).permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
