"""Votes under real concurrency, on PostgreSQL: nothing lost, nothing doubled."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from consultations.models import ProposalCounter, Vote
from consultations.services import participant_for_session, vote_cast

from ..factories import ProposalFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.realservices]


def _in_thread(fn):
    def run(*args):
        try:
            return fn(*args)
        finally:
            connection.close()

    return run


def test_fifty_parallel_voters_give_fifty_votes_and_exact_counters():
    proposal = ProposalFactory()
    participants = [participant_for_session(session_key=f"p{i}") for i in range(50)]

    @_in_thread
    def vote(i):
        return vote_cast(participant=participants[i], proposal=proposal, key="agree" if i % 2 else "disagree")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(vote, range(50)))
    assert Vote.objects.filter(proposal=proposal).count() == 50
    counts = dict(ProposalCounter.objects.filter(proposal=proposal).values_list("key", "count"))
    assert counts == {"agree": 25, "disagree": 25}
    proposal.refresh_from_db()
    assert proposal.votes_total == 50


def test_twenty_parallel_repeats_from_one_participant_give_one_vote():
    proposal = ProposalFactory()
    participant = participant_for_session(session_key="clicker")

    @_in_thread
    def vote(_):
        return vote_cast(participant=participant, proposal=proposal, key="agree")[1]

    with ThreadPoolExecutor(max_workers=20) as pool:
        changed = list(pool.map(vote, range(20)))
    assert changed.count(True) == 1
    assert Vote.objects.filter(proposal=proposal).count() == 1
    assert ProposalCounter.objects.get(proposal=proposal, key="agree").count == 1
    proposal.refresh_from_db()
    assert proposal.votes_total == 1
