"""Every order of a consultation's proposal list reads an index, whatever the consultation's size.

"Most recent" gets the id as tie-break in ``proposal_queue_idx``, and the admin's list of every
proposal in ``proposal_created_idx`` (an import gives thousands of proposals one timestamp, and
the planner then sorted them all); "Random" reads a fixed shuffle of the ids from a per-visitor
start (``proposal_shuffle_idx``) instead of loading and hashing every id; "Most controversial" sorts
on a balance refreshed with the "Most voted" ranks (``rank_debated_idx``) instead of summing
every counter of the consultation per request (docs/operations.md, "The proposal table").
"""

import django.db.models.expressions
import django.utils.timezone
from django.db import migrations, models


def balance_as_counted(apps, schema_editor):
    """Each ranked proposal's balance from its counters (those with a disagree vote only)."""
    agree = "SUM(CASE WHEN c.key = 'agree' THEN c.count ELSE 0 END)"
    disagree = "SUM(CASE WHEN c.key = 'disagree' THEN c.count ELSE 0 END)"
    schema_editor.execute(
        "UPDATE consultations_proposalrank SET balance = COALESCE(("
        f"SELECT CASE WHEN {agree} < {disagree} THEN {agree} ELSE {disagree} END "
        "FROM consultations_proposalcounter c "
        "WHERE c.proposal_id = consultations_proposalrank.proposal_id), 0) "
        "WHERE proposal_id IN (SELECT proposal_id FROM consultations_proposalcounter "
        "WHERE key = 'disagree' AND count > 0)"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("consultations", "0007_hot_votes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="proposal",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="created"),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(fields=["created_at", "id"], name="proposal_created_idx"),
        ),
        migrations.RemoveIndex(
            model_name="proposal",
            name="proposal_queue_idx",
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                fields=["consultation", "status", "created_at", "id"], name="proposal_queue_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                models.F("consultation"),
                models.F("status"),
                models.ExpressionWrapper(
                    django.db.models.expressions.CombinedExpression(
                        django.db.models.expressions.CombinedExpression(
                            models.F("id"), "*", models.Value(2654435761)
                        ),
                        "%%",
                        models.Value(4294967296),
                    ),
                    output_field=models.BigIntegerField(),
                ),
                name="proposal_shuffle_idx",
            ),
        ),
        migrations.AddField(
            model_name="proposalrank",
            name="balance",
            field=models.PositiveIntegerField(db_default=0, default=0, verbose_name="balance"),
        ),
        migrations.AddIndex(
            model_name="proposalrank",
            index=models.Index(
                fields=["consultation", "-balance", "-votes", "-proposal"],
                name="rank_debated_idx",
            ),
        ),
        migrations.RunPython(balance_as_counted, migrations.RunPython.noop),
    ]
