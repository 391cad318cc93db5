"""ML engineers work in the admin: the people who already hold the role become staff (as a grant
makes them from now on; service accounts never); their group reads, on the read-only pages scoped
to their projects, the approval requests, datasets and their versions and PII scans, models, model
versions and prompt templates, fine-tune runs and GPU quotas, and deployments (scans and
evaluations since checks 0002); and every role's group opens the API-tokens page, where each
person manages their own tokens.

The other apps' pages are granted here, in one place, rather than by a migration in each app: the
group is governance's, and this needs only those apps' first permissions (their 0002), not their
latest migration."""

from django.conf import settings
from django.db import migrations

from common.migration_ops import grant_view_permissions

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


def ml_engineers_become_staff(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    UserObjectPermission = apps.get_model("guardian", "UserObjectPermission")
    ServiceAccount = apps.get_model("governance", "ServiceAccount")
    holders = UserObjectPermission.objects.filter(
        content_type__app_label="governance",
        content_type__model="project",
        permission__content_type__app_label="governance",
        permission__codename="role_ml_engineer",
    ).values("user_id")
    User.objects.filter(pk__in=holders, is_active=True, is_staff=False).exclude(
        pk__in=ServiceAccount.objects.values("user_id")
    ).update(is_staff=True)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0008_approval_one_pending"),
        ("guardian", "0001_initial"),
        ("registry", "0002_read_permissions"),
        ("training", "0002_read_permissions"),
        ("serving", "0002_read_permissions"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="apitoken", options={"ordering": ["-created_at"], "verbose_name": "API token"}
        ),
        # Not reversed: who was staff before is not known; revoking the role takes staff status away.
        migrations.RunPython(ml_engineers_become_staff, migrations.RunPython.noop),
        grant_view_permissions("governance", ["approvalrequest"], ["ml_engineer"]),
        grant_view_permissions(
            "registry",
            ["dataset", "datasetversion", "piiscan", "model", "modelversion", "prompttemplate"],
            ["ml_engineer"],
        ),
        grant_view_permissions("training", ["finetunerun", "gpuquota"], ["ml_engineer"]),
        grant_view_permissions("serving", ["deployment"], ["ml_engineer"]),
        grant_view_permissions("governance", ["apitoken"], ROLES),
    ]
