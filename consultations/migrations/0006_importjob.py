import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("consultations", "0005_moderation_at_scale"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ImportJob',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('makeorg', 'Make.org open-data CSV'), ('polis', 'Polis export (ZIP of its CSV files)'), ('csv', 'Generic CSV of open answers')], max_length=16, verbose_name='format')),
                ('file', models.FileField(max_length=255, upload_to='imports/%Y/%m/', verbose_name='file')),
                ('original_name', models.CharField(max_length=255, verbose_name='file name')),
                ('size', models.PositiveBigIntegerField(default=0, verbose_name='size (bytes)')),
                ('sha256', models.CharField(max_length=64, verbose_name='SHA-256')),
                ('options', models.JSONField(blank=True, default=dict, verbose_name='options')),
                ('status', models.CharField(choices=[('pending', 'Waiting'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], db_index=True, default='pending', max_length=16, verbose_name='status')),
                ('rows_total', models.PositiveIntegerField(default=0, verbose_name='rows in the file')),
                ('rows_done', models.PositiveIntegerField(default=0, verbose_name='rows read')),
                ('rows_skipped', models.PositiveIntegerField(default=0, verbose_name='rows skipped')),
                ('created_count', models.PositiveIntegerField(default=0, verbose_name='proposals created')),
                ('existing_count', models.PositiveIntegerField(default=0, verbose_name='proposals already there')),
                ('updated_count', models.PositiveIntegerField(default=0, verbose_name='proposals updated')),
                ('details', models.JSONField(blank=True, default=dict, verbose_name='other counts')),
                ('errors', models.JSONField(blank=True, default=list, verbose_name='first skipped rows')),
                ('error', models.TextField(blank=True, verbose_name='error')),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created')),
                ('started_at', models.DateTimeField(blank=True, null=True, verbose_name='started')),
                ('finished_at', models.DateTimeField(blank=True, null=True, verbose_name='finished')),
                ('consultation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='import_jobs', to='consultations.consultation', verbose_name='consultation')),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='uploaded by')),
            ],
            options={
                'verbose_name': 'import job',
                'verbose_name_plural': 'import jobs',
                'ordering': ['-created_at'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('status__in', ['pending', 'running'])), fields=('consultation', 'sha256'), name='import_job_one_active_per_file')],
            },
        ),
    ]
