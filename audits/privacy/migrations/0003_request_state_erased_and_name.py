"""A request whose erasure ran is ``erased`` (until its response is sent and it is completed):
before, it stayed ``searched`` and the pages said so after the person's data was gone. The model
is named "data-subject request" in the admin, as the app is."""

from django.db import migrations, models


def mark_erased(apps, schema_editor):  # type: ignore[no-untyped-def]
    DataSubjectRequest = apps.get_model("privacy", "DataSubjectRequest")
    DataSubjectRequest.objects.filter(state="searched", erased_at__isnull=False).update(state="erased")


def unmark_erased(apps, schema_editor):  # type: ignore[no-untyped-def]
    DataSubjectRequest = apps.get_model("privacy", "DataSubjectRequest")
    DataSubjectRequest.objects.filter(state="erased").update(state="searched")


class Migration(migrations.Migration):
    dependencies = [("privacy", "0002_read_permissions")]

    operations = [
        migrations.AlterModelOptions(
            name="datasubjectrequest",
            options={"ordering": ["-received_at"], "verbose_name": "data-subject request"},
        ),
        migrations.AlterField(
            model_name="datasubjectrequest",
            name="state",
            field=models.CharField(
                choices=[
                    ("received", "Received"),
                    ("identity_verified", "identity verified"),
                    ("searched", "Searched"),
                    ("erased", "Erased"),
                    ("completed", "Completed"),
                    ("denied", "Denied"),
                    ("withdrawn", "Withdrawn"),
                ],
                default="received",
                max_length=20,
            ),
        ),
        migrations.RunPython(mark_erased, unmark_erased),
    ]
