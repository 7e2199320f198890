"""A vote's update of its proposal row is HOT on PostgreSQL: no index entry is written.

``votes_total`` is in no index since migration 0007 (docs/scaling.md section 2, item 4), and
the table keeps 10 % of each page free (fillfactor 90), so a vote's new row version fits on its
page. Before, 0 of 50 such updates were HOT and each wrote an entry in 8 of the proposal
table's indexes. How many stay HOT over many votes on the same rows also depends on how soon
PostgreSQL can prune the old versions, which other sessions on the server influence: that is
measured by ``bench/vote_row_update.py`` (6,000 of 6,000 on an idle server), not asserted here.
"""

import pytest
from django.db import connection

from consultations.models import Proposal
from consultations.services import participant_for_session, vote_cast

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.realservices]


def _proposal_updates() -> tuple[int, int]:
    """(row updates, HOT ones) of the proposal table, this backend's pending stats included."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'consultations_proposal'"
        )
        return cursor.fetchone()


def _one_proposal_per_page(consultation) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON ((ctid::text::point)[0]) id FROM consultations_proposal "
            "WHERE consultation_id = %s ORDER BY (ctid::text::point)[0], id",
            [consultation.pk],
        )
        return [row[0] for row in cursor.fetchall()]


def test_votes_update_their_proposals_without_touching_an_index():
    consultation = ConsultationFactory()
    ProposalFactory.create_batch(400, consultation=consultation)
    chosen = Proposal.objects.filter(pk__in=_one_proposal_per_page(consultation))
    assert len(chosen) >= 5  # the 400 rows fill several pages
    voter = participant_for_session(session_key="hot")
    updates, hot = _proposal_updates()

    for proposal in chosen:  # each in its own transaction, as on the site
        vote_cast(participant=voter, proposal=proposal, key="agree")
    # A changed vote replaces the old one: the total stays, and the row is not rewritten.
    vote_cast(participant=voter, proposal=chosen[0], key="disagree")

    updates_after, hot_after = _proposal_updates()
    assert updates_after - updates == len(chosen)
    assert hot_after - hot == len(chosen), f"{hot_after - hot} of {len(chosen)} updates were HOT"
    assert set(
        Proposal.objects.filter(pk__in=[p.pk for p in chosen]).values_list("votes_total", flat=True)
    ) == {1}
