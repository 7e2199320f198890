import django.db.models.deletion
from django.db import migrations, models

# Drops only the two indexes. Letting Django alter the fields would also drop and re-add
# their foreign keys, which re-checks every membership row of a large table.
_INDEXES = {
    "consensus_ideamembership_idea_id_34121545": "idea_id",
    "consensus_ideamembership_run_id_35cbfe5e": "run_id",
}


class Migration(migrations.Migration):
    dependencies = [
        ("consensus", "0006_idea_named_by_staff"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "consensus_ideamembership" ("{column}")',
                )
                for name, column in _INDEXES.items()
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="ideamembership",
                    name="idea",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="consensus.idea",
                    ),
                ),
                migrations.AlterField(
                    model_name="ideamembership",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="consensus.enginerun",
                    ),
                ),
            ],
        ),
    ]
