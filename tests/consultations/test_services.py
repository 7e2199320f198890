import pytest

from consultations.models import ProposalCounter, Qualification, Trust, Vote
from consultations.selectors import proposal_vote_shares
from consultations.services import (
    VoteError,
    counters_recount,
    participant_for_session,
    participant_for_user,
    participant_merge,
    qualification_toggle,
    vote_cast,
)

from ..factories import ProposalFactory, UserFactory

pytestmark = pytest.mark.django_db


def counter(proposal, key, trust=Trust.TRUSTED):
    row = ProposalCounter.objects.filter(proposal=proposal, key=key, trust=trust).first()
    return row.count if row else 0


def test_vote_twice_keeps_one_vote():
    proposal = ProposalFactory()
    participant = participant_for_session(session_key="abc")
    _, changed = vote_cast(participant=participant, proposal=proposal, key="agree")
    assert changed
    _, changed = vote_cast(participant=participant, proposal=proposal, key="agree")
    assert not changed
    assert Vote.objects.count() == 1
    assert counter(proposal, "agree") == 1
    proposal.refresh_from_db()
    assert proposal.votes_total == 1


def test_changing_a_vote_moves_the_counter_and_drops_qualifications():
    proposal = ProposalFactory()
    participant = participant_for_session(session_key="abc")
    vote, _ = vote_cast(participant=participant, proposal=proposal, key="agree")
    assert qualification_toggle(vote=vote, key="like_it") is True
    vote, _ = vote_cast(participant=participant, proposal=proposal, key="disagree")
    assert counter(proposal, "agree") == 0
    assert counter(proposal, "like_it") == 0
    assert counter(proposal, "disagree") == 1
    assert not Qualification.objects.exists()
    proposal.refresh_from_db()
    assert proposal.votes_total == 1


def test_qualification_must_match_the_vote_key():
    proposal = ProposalFactory()
    vote, _ = vote_cast(participant=participant_for_session(session_key="x"), proposal=proposal, key="agree")
    with pytest.raises(VoteError):
        qualification_toggle(vote=vote, key="no_way")
    assert not Qualification.objects.exists()


def test_qualification_toggles_on_and_off():
    proposal = ProposalFactory()
    vote, _ = vote_cast(participant=participant_for_session(session_key="x"), proposal=proposal, key="neutral")
    assert qualification_toggle(vote=vote, key="no_opinion") is True
    assert counter(proposal, "no_opinion") == 1
    assert qualification_toggle(vote=vote, key="no_opinion") is False
    assert counter(proposal, "no_opinion") == 0


@pytest.mark.parametrize("key", ["yes", "", "AGREE", "like_it"])
def test_unknown_vote_key_is_refused_and_nothing_stored(key):
    proposal = ProposalFactory()
    with pytest.raises(VoteError):
        vote_cast(participant=participant_for_session(session_key="x"), proposal=proposal, key=key)
    assert not Vote.objects.exists()
    assert not ProposalCounter.objects.exists()


def test_pending_proposal_cannot_be_voted():
    proposal = ProposalFactory(status="pending")
    with pytest.raises(VoteError):
        vote_cast(participant=participant_for_session(session_key="x"), proposal=proposal, key="agree")


def test_untrusted_votes_count_in_totals_but_on_their_own_level():
    proposal = ProposalFactory()
    vote_cast(participant=participant_for_session(session_key="a"), proposal=proposal, key="agree", trust=Trust.SEQUENCE)
    vote_cast(participant=participant_for_session(session_key="b"), proposal=proposal, key="agree", trust=Trust.UNTRUSTED)
    assert counter(proposal, "agree", Trust.SEQUENCE) == 1
    assert counter(proposal, "agree", Trust.UNTRUSTED) == 1
    assert proposal_vote_shares(proposal_ids=[proposal.pk])[proposal.pk]["agree"] == 2


def test_anonymous_votes_move_to_the_account_on_login():
    first, second = ProposalFactory(), ProposalFactory()
    anonymous = participant_for_session(session_key="anon")
    vote_cast(participant=anonymous, proposal=first, key="agree")
    vote_cast(participant=anonymous, proposal=second, key="disagree")
    account = participant_for_user(user=UserFactory())
    vote_cast(participant=account, proposal=second, key="agree")
    moved = participant_merge(source=anonymous, target=account)
    assert moved == 1
    assert set(account.votes.values_list("proposal_id", "key")) == {(first.pk, "agree"), (second.pk, "agree")}
    assert counter(second, "disagree") == 0 and counter(second, "agree") == 1
    assert counters_recount() == {"counters_fixed": 0, "totals_fixed": 0}


def test_recount_repairs_drifted_counters():
    proposal = ProposalFactory()
    for i in range(3):
        vote_cast(participant=participant_for_session(session_key=str(i)), proposal=proposal, key="agree")
    ProposalCounter.objects.filter(proposal=proposal, key="agree").update(count=99)
    report = counters_recount()
    assert report["counters_fixed"] == 1
    assert counter(proposal, "agree") == 3
