"""A vote's update of its proposal row becomes HOT; proposals get a trigram index.

``votes_total`` leaves ``proposal_popular_idx``: the "Most voted" order sorts on a copy of the
totals in the narrow ``ProposalRank`` table (refreshed by ``services.popular_rank_refresh``), so
a vote no longer writes an entry in each of the proposal table's indexes (docs/scaling.md
section 2, item 4). On PostgreSQL the table keeps 10 % of each page free for those row versions,
and content gets the trigram GIN index that word searches and similar proposals were waiting for
(item 7). On a large live table, create the index first with ``CREATE INDEX CONCURRENTLY IF NOT
EXISTS`` (docs/operations.md): this migration then leaves it alone.
"""

import django.db.models.deletion
from django.db import migrations, models

TRIGRAM_INDEX = "proposal_content_trgm_idx"


def rank_as_counted(apps, schema_editor):
    """Every proposal ranked at its current total (one statement: ~1 min at 2M proposals)."""
    schema_editor.execute(
        "INSERT INTO consultations_proposalrank (proposal_id, consultation_id, votes) "
        "SELECT id, consultation_id, votes_total FROM consultations_proposal"
    )


def postgres_storage(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE consultations_proposal SET (fillfactor = 90)")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TRIGRAM_INDEX} ON consultations_proposal "
        "USING gin (content gin_trgm_ops)"
    )


def postgres_storage_undone(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")
    schema_editor.execute("ALTER TABLE consultations_proposal RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("consultations", "0006_importjob"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProposalRank",
            fields=[
                (
                    "proposal",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="rank",
                        serialize=False,
                        to="consultations.proposal",
                    ),
                ),
                ("votes", models.PositiveIntegerField(default=0, verbose_name="votes")),
            ],
            options={
                "verbose_name": "proposal rank",
                "verbose_name_plural": "proposal ranks",
            },
        ),
        migrations.RemoveIndex(
            model_name="proposal",
            name="proposal_popular_idx",
        ),
        migrations.AddField(
            model_name="proposalrank",
            name="consultation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="consultations.consultation",
            ),
        ),
        migrations.AddIndex(
            model_name="proposalrank",
            index=models.Index(
                fields=["consultation", "-votes", "-proposal"], name="rank_popular_idx"
            ),
        ),
        migrations.RunPython(rank_as_counted, migrations.RunPython.noop),
        migrations.RunPython(postgres_storage, postgres_storage_undone),
    ]
