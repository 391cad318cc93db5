"""Witness co-signatures of checkpoints, and the logs this service witnesses."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_deferred_sequencing")]

    operations = [
        migrations.CreateModel(
            name="WitnessConflict",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("origin", models.CharField(db_index=True, max_length=300)),
                ("old_size", models.BigIntegerField()),
                ("request", models.TextField(help_text="the whole add-checkpoint request body")),
                ("reason", models.TextField()),
                ("received_at", models.DateTimeField()),
            ],
            options={"ordering": ["-received_at"]},
        ),
        migrations.CreateModel(
            name="WitnessedLog",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("origin", models.CharField(max_length=300, unique=True)),
                ("size", models.BigIntegerField(default=0)),
                ("root", models.BinaryField(default=b"")),
                (
                    "note",
                    models.TextField(blank=True, help_text="the last checkpoint co-signed, with its log's signatures"),
                ),
                ("updated_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="WitnessCosignature",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("witness", models.CharField(help_text="the witness's verifier key (cosignature/v1)", max_length=300)),
                ("tree_size", models.BigIntegerField()),
                ("note", models.TextField(help_text="the signed checkpoint note the witness co-signed")),
                ("line", models.TextField(help_text="the co-signature line, as the witness answered it")),
                ("timestamp", models.BigIntegerField(help_text="the co-signature's time, POSIX seconds")),
                ("received_at", models.DateTimeField()),
                (
                    "checkpoint",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="cosignatures",
                        to="ledger.checkpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["tree_size", "id"],
                "indexes": [models.Index(fields=["witness", "tree_size"], name="ledger_cosignature_witness")],
                "constraints": [
                    models.UniqueConstraint(fields=("checkpoint", "witness"), name="ledger_cosignature_once")
                ],
            },
        ),
    ]
