"""The votes an imported proposal received at the source, as columns of their own.

Read from ``source_stats`` by ``consultations.models.source_columns`` when a proposal is saved or
imported: the consultation's counters sum them, and the orders "Most voted at the source" and
"Most supported at the source" read them through two partial indexes (proposals with votes at
the source only), instead of every proposal's JSON being parsed per request.
"""

from django.db import migrations, models

BATCH = 2000


def fill_source_columns(apps, schema_editor):
    """The columns of every proposal with statistics at the source, a batch at a time.

    One UPDATE per proposal sent in batches (``executemany``: psycopg pipelines them), which
    stays linear; ``bulk_update``'s CASE over a batch's ids made it quadratic in the batch.
    """
    # The function the model uses, so that the migration and later imports read alike.
    from consultations.models import source_columns

    Proposal = apps.get_model("consultations", "Proposal")
    table = schema_editor.connection.ops.quote_name(Proposal._meta.db_table)
    sql = (
        f"UPDATE {table} SET source_votes = %s, source_adhesion = %s, source_support_low = %s "
        "WHERE id = %s"
    )
    rows = (
        Proposal.objects.exclude(source_stats={})
        .order_by("pk")
        .values_list("pk", "source_stats")
        .iterator(chunk_size=BATCH)
    )
    batch = []
    with schema_editor.connection.cursor() as cursor:
        for pk, stats in rows:
            columns = source_columns(stats)
            if columns["source_votes"]:
                batch.append(
                    (
                        columns["source_votes"],
                        columns["source_adhesion"],
                        columns["source_support_low"],
                        pk,
                    )
                )
            if len(batch) >= BATCH:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


class Migration(migrations.Migration):
    dependencies = [
        ("consultations", "0008_list_orders_at_scale"),
    ]

    operations = [
        migrations.AddField(
            model_name="proposal",
            name="source_adhesion",
            field=models.FloatField(blank=True, null=True, verbose_name="share for at the source"),
        ),
        migrations.AddField(
            model_name="proposal",
            name="source_support_low",
            field=models.FloatField(
                blank=True, null=True, verbose_name="lower bound of the share for at the source"
            ),
        ),
        migrations.AddField(
            model_name="proposal",
            name="source_votes",
            field=models.PositiveIntegerField(
                db_default=0, default=0, verbose_name="votes at the source"
            ),
        ),
        migrations.RunPython(fill_source_columns, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(("source_votes__gt", 0)),
                fields=["consultation", "status", "-source_votes", "-id"],
                name="proposal_source_votes_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="proposal",
            index=models.Index(
                condition=models.Q(("source_votes__gt", 0)),
                fields=["consultation", "status", "-source_support_low", "-id"],
                name="proposal_source_support_idx",
            ),
        ),
    ]
