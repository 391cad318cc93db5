"""An approval whose subject no longer matches lapses for good (issue 26): the state ``lapsed``,
and when and why it lapsed."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0012_second_factor_lock"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalrequest",
            name="lapse_reason",
            field=models.TextField(blank=True, help_text="why the approval lapsed, in words"),
        ),
        migrations.AddField(
            model_name="approvalrequest",
            name="lapsed_at",
            field=models.DateTimeField(blank=True, help_text="when the approval was found not to match", null=True),
        ),
        migrations.AlterField(
            model_name="approvalrequest",
            name="state",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("approved", "Approved"),
                    ("rejected", "Rejected"),
                    ("withdrawn", "Withdrawn"),
                    ("expired", "Expired"),
                    ("lapsed", "Lapsed"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
    ]
