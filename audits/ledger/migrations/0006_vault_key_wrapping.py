"""The vault's data-subject keys wrapped by a key-encryption key."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ledger", "0005_witnesses")]

    operations: list = []
