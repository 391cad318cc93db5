"""The index sequence of deferred sequencing (PostgreSQL only; SQLite always integrates inline).

Created at the next free index, so a ledger written inline switches to deferred without a gap; the
append moves the sequence past any index an inline append took meanwhile.
"""

from django.db import migrations


def create_sequence(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE SEQUENCE IF NOT EXISTS ledger_entry_index_seq AS bigint MINVALUE 0 START 0")
    schema_editor.execute(
        "SELECT setval('ledger_entry_index_seq', COALESCE((SELECT MAX(\"index\") + 1 FROM ledger_entry), 0), false)"
    )


def drop_sequence(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS ledger_entry_index_seq")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_entry_scopes_and_organisation_auditors")]

    operations = [migrations.RunPython(create_sequence, drop_sequence, elidable=False)]
