"""The vault's data-subject keys wrapped by a key-encryption key.

``DataSubjectKey.key`` now holds the key wrapped (RFC 3394) by the configured KEK
(``LEDGER_VAULT_KEK``; the embedded default's key file is made here if there is a key to wrap),
and ``kek_id`` names that KEK. Keys stored in clear before are wrapped in place; erased rows
(no key) stay as they are. Reversing unwraps them back into clear.
"""

from typing import Any

from django.db import migrations, models

BATCH = 500


def wrap_clear_keys(apps: Any, schema_editor: Any) -> None:
    from audits.ledger.kek import KekError, current_kek

    DataSubjectKey = apps.get_model("ledger", "DataSubjectKey")
    clear = DataSubjectKey.objects.using(schema_editor.connection.alias).filter(key__isnull=False, kek_id="")
    if not clear.exists():
        return
    try:
        kek = current_kek()
    except KekError as exc:
        raise SystemExit(f"configuration error: the vault's keys cannot be wrapped: {exc}") from None
    while batch := list(clear.order_by("pk")[:BATCH]):
        for row in batch:
            clear.filter(pk=row.pk).update(key=kek.wrap(bytes(row.key)), kek_id=kek.id)


def unwrap_keys(apps: Any, schema_editor: Any) -> None:
    from audits.ledger.kek import key_unwrap

    DataSubjectKey = apps.get_model("ledger", "DataSubjectKey")
    wrapped = DataSubjectKey.objects.using(schema_editor.connection.alias).filter(key__isnull=False).exclude(kek_id="")
    for row in wrapped.order_by("pk").iterator():
        wrapped.filter(pk=row.pk).update(key=key_unwrap(bytes(row.key), row.kek_id), kek_id="")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0005_witnesses")]

    operations = [
        migrations.AddField(
            model_name="datasubjectkey",
            name="kek_id",
            field=models.CharField(
                blank=True,
                default="",
                help_text="the KEK that wrapped the key (file:... or pkcs11:...)",
                max_length=200,
            ),
        ),
        migrations.AlterField(
            model_name="datasubjectkey",
            name="key",
            field=models.BinaryField(
                help_text="the subject's key wrapped by the KEK kek_id names; NULL once erased", null=True
            ),
        ),
        migrations.RunPython(wrap_clear_keys, unwrap_keys),
    ]
