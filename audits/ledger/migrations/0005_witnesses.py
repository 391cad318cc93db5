"""Witness co-signatures of checkpoints, and the logs this service witnesses."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_deferred_sequencing")]

    operations: list = []
