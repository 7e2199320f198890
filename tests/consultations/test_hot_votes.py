"""A vote's update of its proposal row is HOT on PostgreSQL: no index entry is written.

``votes_total`` is in no index since migration 0007 (docs/scaling.md section 2, item 4), and
the table keeps room for new row versions (fillfactor 90). Before, 0 of 50 such updates were
HOT and each wrote an entry in 8 of the proposal table's indexes.
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


def test_votes_update_their_proposals_without_touching_an_index():
    consultation = ConsultationFactory()
    proposals = ProposalFactory.create_batch(30, consultation=consultation)
    participants = [participant_for_session(session_key=f"hot-{i}") for i in range(10)]
    updates, hot = _proposal_updates()

    for participant in participants:  # 300 votes, each in its own transaction, as on the site
        for proposal in proposals:
            vote_cast(participant=participant, proposal=proposal, key="agree")
    # A changed vote replaces the old one: the total stays, and the row is not rewritten.
    vote_cast(participant=participants[0], proposal=proposals[0], key="disagree")

    updates_after, hot_after = _proposal_updates()
    assert updates_after - updates == 300
    assert hot_after - hot >= 0.95 * 300, f"only {hot_after - hot} of 300 updates were HOT"
    assert set(
        Proposal.objects.filter(consultation=consultation).values_list("votes_total", flat=True)
    ) == {10}
