"""Ledger reads scoped per project.

- Each entry gets its attribution (``EntryScope``: the project it is about, or the organisation).
  Entries written before this migration are attributed here, from their subject, by the same rule
  the apps register for new entries (``audits/ledger/scopes.py``); a subject that names no row
  stays the organisation's. Then the attribution becomes append-only like the entries (triggers).
- ``ledger.read_all_entries`` and the ``organisation_auditor`` group that holds it, with the
  ledger's read permissions: the organisation-wide auditors read every entry. Nobody is in the
  group yet; ``organisation_auditor_grant`` (governance) puts people in it, ledgered.

The attribution reads the subjects' tables of the apps above the ledger (through this migration's
historical models, never their code), hence the dependencies on those apps' migrations.
"""

import uuid

import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GROUP = "organisation_auditor"
CODENAMES = ["read_all_entries", "view_entry", "view_checkpoint", "view_publishedkey", "view_verificationrun"]
BATCH = 5000

# subject type -> (app label, model, the lookup of its project's primary key); a report's entries
# name it by its UUID (REPORT_KEY), every other subject by its primary key.
SUBJECT_PROJECT = {
    "dataset": ("registry", "Dataset", "project_id"),
    "dataset_version": ("registry", "DatasetVersion", "dataset__project_id"),
    "model": ("registry", "Model", "project_id"),
    "model_version": ("registry", "ModelVersion", "model__project_id"),
    "prompt_template": ("registry", "PromptTemplate", "project_id"),
    "fine_tune_run": ("training", "FineTuneRun", "project_id"),
    "security_scan": ("checks", "SecurityScan", "project_id"),
    "bias_evaluation": ("checks", "BiasEvaluation", "project_id"),
    "deployment": ("serving", "Deployment", "project_id"),
    "data_subject_request": ("privacy", "DataSubjectRequest", "project_id"),
    "legal_hold": ("privacy", "LegalHold", "project_id"),
    "report": ("reports", "ReportRun", "project_id"),
}


REPORT_KEY = "report_id"


def _row_ids(ids):
    return {int(pk) for pk in ids if pk.isascii() and pk.isdigit() and int(pk) < 2**63}


def _projects_of(apps, subject_type, ids):
    """subject id -> project primary key, for the ids of one subject type that name a row."""
    if subject_type == "project":  # by slug; the GPU quota's entries name the project by its key
        Project = apps.get_model("governance", "Project")
        by_slug = dict(Project.objects.filter(slug__in=ids).values_list("slug", "pk"))
        by_pk = {str(pk): pk for pk in Project.objects.filter(pk__in=_row_ids(ids)).values_list("pk", flat=True)}
        return {pk: by_slug.get(pk, by_pk.get(pk)) for pk in ids}
    if subject_type not in SUBJECT_PROJECT:
        return {}
    app_label, model_name, path = SUBJECT_PROJECT[subject_type]
    model = apps.get_model(app_label, model_name)
    if subject_type == "report":
        uuids = {_uuid(pk) for pk in ids} - {None}
        found = model.objects.filter(report_id__in=uuids).values_list(REPORT_KEY, path)
        return {str(report_id): project for report_id, project in found}
    return {str(pk): project for pk, project in model.objects.filter(pk__in=_row_ids(ids)).values_list("pk", path)}


def _uuid(text):
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def attribute_existing_entries(apps, schema_editor):
    Entry = apps.get_model("ledger", "Entry")
    EntryScope = apps.get_model("ledger", "EntryScope")
    start = 0
    while True:
        rows = list(
            Entry.objects.filter(index__gte=start)
            .order_by("index")
            .values_list("index", "subject_type", "subject_id")[:BATCH]
        )
        if not rows:
            return
        ids_by_type = {}
        for _, subject_type, subject_id in rows:
            if subject_type:
                ids_by_type.setdefault(subject_type, set()).add(subject_id)
        found = {kind: _projects_of(apps, kind, ids) for kind, ids in ids_by_type.items()}
        EntryScope.objects.bulk_create(
            [
                EntryScope(entry_id=index, project_id=found.get(subject_type, {}).get(subject_id))
                for index, subject_type, subject_id in rows
            ]
        )
        start = rows[-1][0] + 1


def install_triggers(apps, schema_editor):
    from audits.ledger import triggers

    triggers.install(schema_editor.connection, ("ledger_entryscope",))


def drop_triggers(apps, schema_editor):
    from audits.ledger import triggers

    triggers.drop_rollback_unsafe(schema_editor.connection, ("ledger_entryscope",))


def create_group(apps, schema_editor):
    ledger = apps.get_app_config("ledger")
    ledger.models_module = True  # permissions are made after migrations; make the ledger's now
    create_permissions(ledger, apps=apps, verbosity=0)
    ledger.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(*Permission.objects.filter(content_type__app_label="ledger", codename__in=CODENAMES))


def drop_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0002_append_only_triggers_and_head"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("governance", "0011_break_glass_review_in_words"),
        ("registry", "0007_pii_scan_in_words"),
        ("training", "0003_names_in_words"),
        ("serving", "0004_start_claim"),
        ("checks", "0002_read_permissions"),
        ("privacy", "0003_request_state_erased_and_name"),
        ("reports", "0003_claims"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="entry",
            options={
                "ordering": ["index"],
                "permissions": [("read_all_entries", "Can read every ledger entry, of every project")],
                "verbose_name_plural": "entries",
            },
        ),
        migrations.CreateModel(
            name="EntryScope",
            fields=[
                (
                    "entry",
                    models.OneToOneField(
                        db_column="entry_index",
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="scope",
                        serialize=False,
                        to="ledger.entry",
                    ),
                ),
                (
                    "project_id",
                    models.BigIntegerField(
                        blank=True, help_text="the project's primary key; empty: the organisation's", null=True
                    ),
                ),
            ],
            options={"indexes": [models.Index(fields=["project_id", "entry"], name="ledger_entry_scope_project")]},
        ),
        migrations.RunPython(attribute_existing_entries, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, drop_triggers),
        migrations.RunPython(create_group, drop_group),
    ]
