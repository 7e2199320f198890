"""Read scaling (docs/scaling.md section 2): fewer indexes written per vote, an index path to
the counters of a consultation, and the task outbox (config/outbox.py)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

BACKFILL = (
    "UPDATE consultations_proposalcounter SET consultation_id = ("
    "SELECT p.consultation_id FROM consultations_proposal p "
    "WHERE p.id = consultations_proposalcounter.proposal_id) WHERE consultation_id IS NULL"
)


class Migration(migrations.Migration):
    dependencies = [
        ("consultations", "0002_citizen_journey"),
    ]

    operations = [
        migrations.CreateModel(
            name="PendingTask",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200, verbose_name="task")),
                ("args", models.JSONField(blank=True, default=list, verbose_name="arguments")),
                ("kwargs", models.JSONField(blank=True, default=dict, verbose_name="keyword arguments")),
                ("options", models.JSONField(blank=True, default=dict, verbose_name="options")),
                ("attempts", models.PositiveIntegerField(default=0, verbose_name="attempts")),
                ("last_error", models.CharField(blank=True, max_length=500, verbose_name="last error")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="created")),
            ],
            options={
                "verbose_name": "pending task",
                "verbose_name_plural": "pending tasks",
                "ordering": ["pk"],
            },
        ),
        migrations.AddField(
            model_name="proposalcounter",
            name="consultation",
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="consultations.consultation"),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name="proposalcounter",
            index=models.Index(fields=["consultation", "trust"], name="counter_consultation_idx"),
        ),
        migrations.AlterField(
            model_name="exposure",
            name="participant",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="exposures", to="consultations.participant"),
        ),
        migrations.AlterField(
            model_name="proposal",
            name="consultation",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="proposals", to="consultations.consultation", verbose_name="consultation"),
        ),
        migrations.AlterField(
            model_name="proposalcounter",
            name="proposal",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="counters", to="consultations.proposal"),
        ),
        migrations.AlterField(
            model_name="vote",
            name="participant",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="votes", to="consultations.participant", verbose_name="participant"),
        ),
        migrations.AlterField(
            model_name="vote",
            name="proposal",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="votes", to="consultations.proposal", verbose_name="proposal"),
        ),
    ]
