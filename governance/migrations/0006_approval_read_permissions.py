"""Everyone who works in the admin sees approval requests of their projects (the inbox)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

READERS = ["auditor", "compliance_officer", "data_steward", "security_reviewer", "fairness_reviewer", "platform_admin"]


def forwards(apps, schema_editor):
    governance = apps.get_app_config("governance")
    governance.models_module = True
    create_permissions(governance, apps=apps, verbosity=0)
    governance.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label="governance", codename="view_approvalrequest")
    for name in READERS:
        Group.objects.get(name=name).permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [("governance", "0005_policysetrecord")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
