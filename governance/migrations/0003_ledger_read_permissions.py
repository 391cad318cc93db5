"""Auditors and compliance officers read the ledger (entries, checkpoints, keys, verifications)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = ["auditor", "compliance_officer"]
CODENAMES = ["view_entry", "view_checkpoint", "view_publishedkey", "view_verificationrun"]


def forwards(apps, schema_editor):
    ledger = apps.get_app_config("ledger")
    ledger.models_module = True  # permissions are made after migrations; make the ledger's now
    create_permissions(ledger, apps=apps, verbosity=0)
    ledger.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = list(Permission.objects.filter(content_type__app_label="ledger", codename__in=CODENAMES))
    for name in READERS:
        Group.objects.get(name=name).permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [("governance", "0002_roles_and_system_account"), ("ledger", "0002_append_only_triggers_and_head")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
