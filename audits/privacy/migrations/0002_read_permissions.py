"""Compliance officers and auditors see data-subject requests, legal holds and model reviews of
their projects in the admin (the pages are read-only; actions call the services)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = ["auditor", "compliance_officer"]
MODELS = ["datasubjectrequest", "legalhold", "modelreview"]


def forwards(apps, schema_editor):
    privacy = apps.get_app_config("privacy")
    privacy.models_module = True  # permissions are made after migrations; make these now
    create_permissions(privacy, apps=apps, verbosity=0)
    privacy.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [f"view_{model}" for model in MODELS]
    permissions = list(Permission.objects.filter(content_type__app_label="privacy", codename__in=codenames))
    for name in READERS:
        Group.objects.get(name=name).permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("privacy", "0001_initial"), ("governance", "0002_roles_and_system_account")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
