"""The append-only triggers and the single head row."""

from django.db import migrations


def forwards(apps, schema_editor):
    from audits.ledger import triggers

    triggers.install(schema_editor.connection, triggers.FIRST_TABLES)
    apps.get_model("ledger", "LedgerHead").objects.get_or_create(id=1, defaults={"size": 0, "frontier": b""})


def backwards(apps, schema_editor):
    from audits.ledger import triggers

    triggers.drop_rollback_unsafe(schema_editor.connection, triggers.FIRST_TABLES)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
