"""The index sequence and the integrator (decoupled sequencing)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_entry_scopes_and_organisation_auditors")]

    operations: list = []
