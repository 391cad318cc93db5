# A data steward's mark on one finding of a PII scan (false positive or personal data).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0005_pii_scan_claim'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PiiFindingMark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('finding', models.PositiveIntegerField()),
                ('state', models.CharField(choices=[('false_positive', 'not personal data'), ('personal_data', 'personal data')], max_length=32)),
                ('marked_at', models.DateTimeField()),
                ('marked_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('scan', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='marks', to='registry.piiscan')),
            ],
            options={
                'ordering': ['scan_id', 'finding'],
                'constraints': [models.UniqueConstraint(fields=('scan', 'finding'), name='registry_finding_mark_unique')],
            },
        ),
    ]
