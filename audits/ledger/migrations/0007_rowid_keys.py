"""The entries' and nodes' keys become SQLite rowids (``RowidKeyField``); no change on PostgreSQL.

On SQLite, Django rebuilds ``ledger_entry``, ``ledger_node`` and ``ledger_entryscope`` (whose key
is the entry's) with their rows, and a dropped table takes its triggers with it: the append-only
triggers are put back after the rebuild, in both directions.
"""

from django.db import migrations

import audits.ledger.models

REBUILT = ("ledger_entry", "ledger_node", "ledger_entryscope")


def reinstall_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    from audits.ledger import triggers

    triggers.install(schema_editor.connection, REBUILT)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0006_vault_key_wrapping")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, reinstall_triggers, elidable=False),
        migrations.AlterField(
            model_name="entry",
            name="index",
            field=audits.ledger.models.RowidKeyField(primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name="node",
            name="key",
            field=audits.ledger.models.RowidKeyField(primary_key=True, serialize=False),
        ),
        migrations.RunPython(reinstall_triggers, migrations.RunPython.noop, elidable=False),
    ]
