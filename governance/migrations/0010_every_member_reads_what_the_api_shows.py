"""Every role reads in the admin what the API already shows it: data stewards see the fine-tune
runs, security scans, bias evaluations and deployments of their projects (they decide on the data
those use; the API lists them to every member), and compliance officers, auditors and platform
admins see the break-glass reviews (compliance officers close them; no role could open their page).
The pages stay scoped to the person's projects and read-only."""

from django.db import migrations

from common.migration_ops import grant_view_permissions


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0009_ml_engineers_work_in_the_admin"),
        ("training", "0002_read_permissions"),
        ("serving", "0002_read_permissions"),
        ("checks", "0002_read_permissions"),
    ]

    operations = [
        grant_view_permissions("governance", ["breakglassreview"], ["compliance_officer", "auditor", "platform_admin"]),
        grant_view_permissions("training", ["finetunerun"], ["data_steward"]),
        grant_view_permissions("serving", ["deployment"], ["data_steward"]),
        grant_view_permissions("checks", ["securityscan", "biasevaluation"], ["data_steward"]),
    ]
