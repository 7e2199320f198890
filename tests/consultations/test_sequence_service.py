"""Sequences, tokens and trust, participants of a request, proposals (services and selectors)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.test import RequestFactory
from django.utils import timezone

from consultations.models import Exposure, Participant, Proposal, Trust, Vote
from consultations.selectors import proposal_similar, sequence_candidates
from consultations.services import (
    SESSION_PARTICIPANT,
    ProposalError,
    VoteError,
    participant_for_session,
    participant_for_user,
    participant_from_request,
    participant_login,
    proposal_clean_content,
    proposal_submit,
    qualification_toggle,
    sequence_start,
    vote_cast,
    vote_submit,
    vote_trust,
)
from consultations.text import contains_html, dominant_keywords, strip_prefix, with_prefix

from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]



@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


def anonymous_request():
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.session = SessionStore()
    return request


def consultation_with(n, **kwargs):
    consultation = ConsultationFactory(**kwargs)
    proposals = [
        ProposalFactory(
            consultation=consultation, content=f"Il faut une idée numéro {i} sur le sujet {i * 7}"
        )
        for i in range(n)
    ]
    return consultation, proposals


# Participants of a request


def test_anonymous_visitor_gets_one_session_participant():
    request = anonymous_request()
    first = participant_from_request(request)
    assert first.user is None and first.session_key == request.session[SESSION_PARTICIPANT]
    assert participant_from_request(request).pk == first.pk
    assert Participant.objects.count() == 1


def test_logged_in_visitor_gets_their_user_participant():
    user = UserFactory()
    request = anonymous_request()
    request.user = user
    assert participant_from_request(request) == participant_for_user(user=user)


def test_login_hands_anonymous_votes_to_a_new_account_keeping_the_participant():
    proposal = ProposalFactory()
    request = anonymous_request()
    anonymous = participant_from_request(request)
    vote_cast(participant=anonymous, proposal=proposal, key="agree")
    user = UserFactory()
    participant = participant_login(session=request.session, user=user)
    assert participant.pk == anonymous.pk and participant.user == user
    assert participant.session_key is None
    assert SESSION_PARTICIPANT not in request.session


def test_login_merges_anonymous_votes_into_an_existing_account():
    p1, p2 = ProposalFactory.create_batch(2)
    user = UserFactory()
    existing = participant_for_user(user=user)
    vote_cast(participant=existing, proposal=p1, key="disagree")
    request = anonymous_request()
    anonymous = participant_from_request(request)
    vote_cast(participant=anonymous, proposal=p1, key="agree")
    vote_cast(participant=anonymous, proposal=p2, key="agree")
    assert participant_login(session=request.session, user=user) == existing
    assert dict(Vote.objects.values_list("proposal_id", "key")) == {
        p1.pk: "disagree",
        p2.pk: "agree",
    }
    assert not Participant.objects.filter(pk=anonymous.pk).exists()


def test_login_without_session_participant_changes_nothing():
    request = anonymous_request()
    assert participant_login(session=request.session, user=UserFactory()) is None
    assert not Participant.objects.exists()


# Sequence start


def test_sequence_logs_every_card_as_an_exposure_with_its_pool():
    consultation, proposals = consultation_with(20)
    participant = participant_for_session(session_key="s")
    started = sequence_start(consultation=consultation, participant=participant, rng=1)
    assert len(started.items) == consultation.sequence_size == 12
    exposures = list(Exposure.objects.filter(participant=participant).order_by("position"))
    assert [e.proposal_id for e in exposures] == [i.proposal_id for i in started.items]
    assert [e.position for e in exposures] == list(range(1, 13))
    assert {e.sequence_id for e in exposures} == {started.id}
    assert all(e.pool in {"new", "top", "controversy", "fallback"} for e in exposures)
    assert len({i.proposal_id for i in started.items}) == 12


def test_sequence_never_repeats_voted_proposals():
    consultation, proposals = consultation_with(15)
    participant = participant_for_session(session_key="s")
    voted = set()
    for round_ in range(3):
        started = sequence_start(consultation=consultation, participant=participant, rng=round_)
        ids = [item.proposal_id for item in started.items]
        assert not voted & set(ids)
        for pk in ids[:5]:
            vote_cast(participant=participant, proposal=Proposal.objects.get(pk=pk), key="agree")
            voted.add(pk)
    assert len(voted) == 15
    assert sequence_start(consultation=consultation, participant=participant).items == []


def test_sequence_skips_pending_and_other_consultations():
    consultation, proposals = consultation_with(3)
    ProposalFactory(consultation=consultation, status="pending")
    ProposalFactory()  # another consultation
    started = sequence_start(
        consultation=consultation, participant=participant_for_session(session_key="s")
    )
    assert {i.proposal_id for i in started.items} == {p.pk for p in proposals}


def test_sequence_of_a_closed_consultation_is_refused():
    consultation, _ = consultation_with(3, ends_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(VoteError):
        sequence_start(
            consultation=consultation, participant=participant_for_session(session_key="s")
        )
    assert not Exposure.objects.exists()


def test_candidates_count_sequence_and_trusted_votes_but_never_untrusted():
    consultation, (proposal,) = consultation_with(1)
    for i, trust in enumerate([Trust.SEQUENCE, Trust.SEQUENCE, Trust.TRUSTED, Trust.UNTRUSTED]):
        vote, _ = vote_cast(
            participant=participant_for_session(session_key=f"s{i}"),
            proposal=proposal,
            key="agree",
            trust=trust,
            in_sequence=trust == Trust.SEQUENCE,
        )
        qualification_toggle(vote=vote, key="like_it")
    author = UserFactory()
    Proposal.objects.filter(pk=proposal.pk).update(author=author)
    (candidate,) = sequence_candidates(consultation=consultation)
    assert candidate.sequence == {"agree": 2, "like_it": 2}
    assert candidate.verified == {"agree": 3, "like_it": 3}
    assert candidate.author_key == f"u{author.pk}"
    assert candidate.keywords


# Tokens and trust


def test_vote_with_the_card_token_is_a_sequence_vote():
    consultation, _ = consultation_with(3)
    participant = participant_for_session(session_key="s")
    item = sequence_start(consultation=consultation, participant=participant).items[0]
    proposal = Proposal.objects.get(pk=item.proposal_id)
    vote, _ = vote_submit(participant=participant, proposal=proposal, key="agree", token=item.token)
    assert (vote.trust, vote.in_sequence) == (Trust.SEQUENCE, True)


def test_vote_without_token_is_trusted_and_outside_the_sequence():
    proposal = ProposalFactory()
    participant = participant_for_session(session_key="s")
    vote, _ = vote_submit(participant=participant, proposal=proposal, key="agree")
    assert (vote.trust, vote.in_sequence) == (Trust.TRUSTED, False)


def test_tampered_or_borrowed_tokens_make_untrusted_votes():
    consultation, _ = consultation_with(3)
    alice = participant_for_session(session_key="alice")
    bob = participant_for_session(session_key="bob")
    items = sequence_start(consultation=consultation, participant=alice).items
    first = Proposal.objects.get(pk=items[0].proposal_id)
    second = Proposal.objects.get(pk=items[1].proposal_id)
    token = items[0].token
    sequence_id, participant_id, mac = token.split(".")
    forged = [
        token[:-1] + ("0" if token[-1] != "0" else "1"),  # one character changed
        f"{sequence_id}.{bob.pk}.{mac}",  # another participant id, same MAC
        "garbage",
        "a.b.c",
    ]
    for bad in forged:
        assert vote_trust(participant=alice, proposal=first, token=bad) == (Trust.UNTRUSTED, False)
    # Alice's token used by Bob, or for another proposal.
    assert vote_trust(participant=bob, proposal=first, token=token) == (Trust.UNTRUSTED, False)
    assert vote_trust(participant=alice, proposal=second, token=token) == (Trust.UNTRUSTED, False)
    vote, _ = vote_submit(participant=bob, proposal=first, key="agree", token=token)
    assert vote.trust == Trust.UNTRUSTED
    first.refresh_from_db()
    assert first.votes_total == 1  # counted in the displayed total all the same


def test_tokens_stay_valid_after_merging_into_an_existing_account():
    consultation, _ = consultation_with(3)
    user = UserFactory()
    participant_for_user(user=user)
    request = anonymous_request()
    anonymous = participant_from_request(request)
    item = sequence_start(consultation=consultation, participant=anonymous).items[0]
    target = participant_login(session=request.session, user=user)
    assert target.pk != anonymous.pk
    proposal = Proposal.objects.get(pk=item.proposal_id)
    assert vote_trust(participant=target, proposal=proposal, token=item.token) == (
        Trust.SEQUENCE,
        True,
    )


def test_votes_on_a_closed_consultation_are_refused():
    proposal = ProposalFactory(
        consultation=ConsultationFactory(ends_at=timezone.now() - timedelta(hours=1))
    )
    with pytest.raises(VoteError):
        vote_submit(
            participant=participant_for_session(session_key="s"), proposal=proposal, key="agree"
        )
    assert not Vote.objects.exists()


# Proposals


def test_text_helpers():
    assert strip_prefix("  il faut   ouvrir les musées ", "Il faut") == "ouvrir les musées"
    assert with_prefix("ouvrir les musées", "Il faut") == "Il faut ouvrir les musées"
    assert with_prefix("Il faut ouvrir", "Il faut") == "Il faut ouvrir"
    assert contains_html("Il faut <b>gras</b>") and contains_html("<script>x</script>")
    assert contains_html("a <!-- comment -->") and contains_html("</p>")
    assert not contains_html("Il faut que 3 < 5 et 7 > 2") and not contains_html("je <3 Paris")
    keywords = dominant_keywords("ouvrir les musées le soir, musée gratuit")
    assert "musee" in keywords and "les" not in keywords


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Il faut ouvrir les musées le soir", "Il faut ouvrir les musées le soir"),
        ("ouvrir les musées le soir", "Il faut ouvrir les musées le soir"),
        ("  IL FAUT   ouvrir les musées   le soir ", "Il faut ouvrir les musées le soir"),
    ],
)
def test_the_prefix_is_kept_or_added_back(text, expected):
    consultation = ConsultationFactory()
    assert proposal_clean_content(consultation=consultation, text=text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Il faut",
        "Il faut trop court",  # 11 characters after the prefix
        "Il faut " + "x" * 141,
        "Il faut ouvrir <b>les</b> musées le soir",
        "<script>alert(1)</script> ouvrir les musées",
    ],
)
def test_bad_proposals_are_refused(text):
    with pytest.raises(ProposalError):
        proposal_clean_content(consultation=ConsultationFactory(), text=text)


def test_length_bounds_come_from_the_consultation():
    consultation = ConsultationFactory(proposal_min_length=3, proposal_max_length=20)
    assert (
        proposal_clean_content(consultation=consultation, text="des bancs") == "Il faut des bancs"
    )
    with pytest.raises(ProposalError):
        proposal_clean_content(consultation=consultation, text="x" * 21)
    assert proposal_clean_content(consultation=consultation, text="x" * 20)


def test_proposal_submit_is_pending_with_the_authors_public_name():
    user = UserFactory(display_name="Camille", first_name="Camille-Marie", age=34)
    consultation = ConsultationFactory()
    proposal = proposal_submit(
        consultation=consultation, user=user, text="ouvrir les musées le soir"
    )
    assert proposal.status == Proposal.Status.PENDING
    assert (proposal.author, proposal.author_name, proposal.author_age) == (user, "Camille", 34)
    assert proposal.content == "Il faut ouvrir les musées le soir"


def test_auto_accepted_consultation_publishes_at_once():
    proposal = proposal_submit(
        consultation=ConsultationFactory(auto_accept=True),
        user=UserFactory(),
        text="ouvrir les musées le soir",
    )
    assert proposal.status == Proposal.Status.ACCEPTED


@pytest.mark.parametrize(
    "consultation_kwargs",
    [{"can_propose": False}, {"ends_at": "past"}, {"starts_at": "future"}],
)
def test_proposals_only_while_the_consultation_accepts_them(consultation_kwargs):
    now = timezone.now()
    kwargs = {
        k: {"past": now - timedelta(hours=1), "future": now + timedelta(days=1)}.get(v, v)
        for k, v in consultation_kwargs.items()
    }
    if "starts_at" in kwargs:
        kwargs["ends_at"] = None
    consultation = ConsultationFactory(**kwargs)
    with pytest.raises(ProposalError):
        proposal_submit(
            consultation=consultation, user=UserFactory(), text="ouvrir les musées le soir"
        )
    assert not Proposal.objects.exists()


def test_anonymous_users_cannot_propose():
    with pytest.raises(ProposalError):
        proposal_submit(
            consultation=ConsultationFactory(),
            user=AnonymousUser(),
            text="ouvrir les musées le soir",
        )


def test_proposals_are_rate_limited_per_account(settings):
    settings.CONCORDE_PROPOSALS_PER_HOUR = 3
    consultation = ConsultationFactory()
    user, other = UserFactory(), UserFactory()
    for i in range(3):
        proposal_submit(
            consultation=consultation, user=user, text=f"ouvrir les musées le soir, idée {i}"
        )
    with pytest.raises(ProposalError, match="3 proposals in the last hour"):
        proposal_submit(
            consultation=consultation, user=user, text="ouvrir les musées le soir, encore"
        )
    assert Proposal.objects.filter(author=user).count() == 3
    proposal_submit(consultation=consultation, user=other, text="ouvrir les musées le soir aussi")


def test_similar_proposals_are_found_and_others_are_not():
    consultation = ConsultationFactory()
    museum = ProposalFactory(
        consultation=consultation, content="Il faut ouvrir les musées gratuitement le soir"
    )
    ProposalFactory(
        consultation=consultation, content="Il faut planter des arbres dans les cours d'école"
    )
    ProposalFactory(
        consultation=consultation, content="Il faut ouvrir les musées tard", status="pending"
    )
    found = proposal_similar(consultation=consultation, text="Il faut ouvrir les musées le soir")
    assert found == [museum]
    assert proposal_similar(consultation=consultation, text="Il faut réduire la vitesse") == []
    assert proposal_similar(consultation=consultation, text="Il faut") == []
