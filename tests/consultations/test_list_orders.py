"""The proposal list's "Random" and "Most controversial" orders: index-read pages at any size."""

import importlib
from unittest import mock

import pytest
from django.db import connection
from django.urls import reverse

from consultations import views
from consultations.models import SHUFFLE_SPAN, Proposal, ProposalRank
from consultations.selectors import ShuffledProposals, proposal_public_list
from consultations.services import participant_for_session, popular_rank_refresh, vote_cast

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _shuffled(consultation, seed: str) -> ShuffledProposals:
    return proposal_public_list(consultation=consultation, sort="random", seed=seed)


def _pages(order: ShuffledProposals, total: int, size: int) -> list[int]:
    return [p.pk for lo in range(0, total, size) for p in order[lo : lo + size]]


@pytest.fixture
def thirty(db):
    consultation = ConsultationFactory()
    proposals = ProposalFactory.create_batch(30, consultation=consultation)
    ProposalFactory(consultation=consultation, status=Proposal.Status.PENDING)
    return consultation, [p.pk for p in proposals]


def test_the_random_order_is_the_shuffle_read_from_the_visitors_start_around(thirty):
    consultation, pks = thirty
    key = {pk: pk * 2654435761 % SHUFFLE_SPAN for pk in pks}
    for seed in [f"visitor-{i}" for i in range(12)]:
        order = _shuffled(consultation, seed)
        after = sorted((pk for pk in pks if key[pk] >= order.start), key=key.get)
        before = sorted((pk for pk in pks if key[pk] < order.start), key=key.get)
        # pages of 7 straddle the wrap for most starts: each proposal exactly once, in order
        assert _pages(order, 30, 7) == after + before, seed
        assert _pages(order, 30, 30) == after + before
        assert order.count() == 30  # the pending one is not listed
        assert order[28:40] == [Proposal.objects.get(pk=pk) for pk in (after + before)[28:]]
        assert order[30:37] == []


def test_visitors_meet_the_proposals_in_different_places(thirty):
    consultation, pks = thirty
    firsts = {_shuffled(consultation, f"s{i}")[0:1][0].pk for i in range(200)}
    # the starts spread over the shuffle: 200 visitors' pages open with (nearly) all 30
    assert len(firsts) >= 25
    assert _pages(_shuffled(consultation, "same"), 30, 10) == _pages(
        _shuffled(consultation, "same"), 30, 10
    )


def test_a_random_page_reads_one_index_range_not_every_id(
    client, thirty, django_assert_max_num_queries
):
    consultation, pks = thirty
    url = consultation.get_absolute_url()
    seen = []
    for page in (1, 2):
        with django_assert_max_num_queries(40) as queries:
            response = client.get(url, {"sort": "random", "page": page})
        seen += [p.pk for p, _ in response.context["rows"]]
        listing = [
            q["sql"]
            for q in queries.captured_queries
            if 'FROM "consultations_proposal"' in q["sql"] and "% 4294967296" in q["sql"]
        ]
        # a page, or the length of the head when a page starts past it (index-only ranges)
        assert listing and all("LIMIT" in sql or "COUNT(" in sql for sql in listing), listing
    assert sorted(seen) == sorted(pks)
    html = response.content.decode()
    assert "30 proposals" in html and "Page 2 of 2" in html


def test_a_random_order_read_otherwise_than_by_page_is_refused(thirty):
    consultation, _ = thirty
    order = _shuffled(consultation, "x")
    with pytest.raises(TypeError, match="slices without a step"):
        order[0:10:2]
    with pytest.raises(TypeError):
        order[3]
    assert order[5:5] == [] and order[5:2] == []


def _vote(proposal, key: str, voters: int, tag: str = ""):
    for i in range(voters):
        vote_cast(
            participant=participant_for_session(session_key=f"{tag}{key}{proposal.pk}-{i}"),
            proposal=proposal,
            key=key,
        )


def _controversial(consultation) -> list[str]:
    return [
        p.content for p in proposal_public_list(consultation=consultation, sort="controversial")
    ]


@pytest.fixture
def debate(db):
    consultation = ConsultationFactory()
    a, b, c = (
        ProposalFactory(consultation=consultation, content=f"Il faut {w}") for w in ("a", "b", "c")
    )
    _vote(a, "agree", 3)
    _vote(a, "disagree", 2)  # balance 2
    _vote(b, "agree", 5)  # balance 0
    _vote(c, "agree", 1)
    _vote(c, "disagree", 1)  # balance 1
    return consultation, a, b, c


def test_the_most_controversial_order_is_the_live_one_until_ranked_then_the_ranks(debate):
    consultation, a, b, c = debate
    assert _controversial(consultation) == ["Il faut a", "Il faut c", "Il faut b"]  # live counters
    assert popular_rank_refresh(consultation_id=consultation.pk) == 3
    balances = dict(ProposalRank.objects.values_list("proposal__content", "balance"))
    assert balances == {"Il faut a": 2, "Il faut b": 0, "Il faut c": 1}
    assert _controversial(consultation) == ["Il faut a", "Il faut c", "Il faut b"]
    _vote(b, "disagree", 2, tag="late")  # b: 5 agree, 2 disagree
    assert _controversial(consultation) == [
        "Il faut a",
        "Il faut c",
        "Il faut b",
    ]  # until refreshed
    assert popular_rank_refresh(consultation_id=consultation.pk) == 1
    # b and a tie at 2: more votes first
    assert _controversial(consultation) == ["Il faut b", "Il faut a", "Il faut c"]
    assert popular_rank_refresh(consultation_id=consultation.pk) == 0  # idempotent


def test_a_changed_vote_moves_the_balance_though_not_the_total(debate):
    consultation, a, b, c = debate
    popular_rank_refresh(consultation_id=consultation.pk)
    vote_cast(
        participant=participant_for_session(session_key=f"agree{b.pk}-0"),
        proposal=b,
        key="disagree",
    )
    b.refresh_from_db()
    assert b.votes_total == 5
    assert popular_rank_refresh(consultation_id=consultation.pk) == 1
    assert ProposalRank.objects.get(proposal=b).balance == 1
    # b and c at 1: b has more votes
    assert _controversial(consultation) == ["Il faut a", "Il faut b", "Il faut c"]


def test_reading_the_most_controversial_order_asks_for_a_refresh(client, debate):
    consultation, *_ = debate
    with mock.patch.object(views, "popular_rank_refresh_soon") as asked:
        client.get(consultation.get_absolute_url(), {"sort": "controversial"})
    asked.assert_called_once()
    html = client.get(consultation.get_absolute_url(), {"sort": "controversial"}).content.decode()
    assert html.index("Il faut a") < html.index("Il faut c") < html.index("Il faut b")
    assert ProposalRank.objects.filter(consultation=consultation).count() == 3  # inline: no broker


class _Executor:
    """What the migration's function uses of a schema editor (SQLite's refuses to open inside
    the test's transaction)."""

    def execute(self, sql, params=()):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def test_the_migration_gives_ranked_proposals_their_balance(debate):
    consultation, a, b, c = debate
    popular_rank_refresh(consultation_id=consultation.pk)
    ProposalRank.objects.update(balance=0)  # as the column was added
    migration = importlib.import_module("consultations.migrations.0008_list_orders_at_scale")
    migration.balance_as_counted(None, _Executor())
    balances = dict(ProposalRank.objects.values_list("proposal__content", "balance"))
    assert balances == {"Il faut a": 2, "Il faut b": 0, "Il faut c": 1}
    assert popular_rank_refresh(consultation_id=consultation.pk) == 0


def test_the_admin_finds_proposals_by_their_words_or_external_id(admin_client):
    consultation = ConsultationFactory()
    for text, external in (
        ("Il faut des PISTES cyclables partout", "mk-1"),
        ("Il faut des pistes de ski gratuites", "mk-2"),
        ("Il faut protéger les forêts (50%)", "mk-3"),
    ):
        ProposalFactory(consultation=consultation, content=text, external_id=external)
    url = reverse("admin:consultations_proposal_changelist")

    def found(q):
        response = admin_client.get(url, {"q": q})
        assert response.status_code == 200
        return sorted(p.external_id for p in response.context["cl"].result_list)

    assert found("pistes") == ["mk-1", "mk-2"]
    assert found("pistes cyclables") == ["mk-1"]  # every word, in any order
    assert found('"cyclables partout"') == ["mk-1"]  # a quoted phrase
    assert found("mk-3") == ["mk-3"]
    assert found("(50%)") == ["mk-3"]  # taken literally, not as a pattern
    assert found(".*") == [] and found('""') == ["mk-1", "mk-2", "mk-3"]
    response = admin_client.get(url, {"created_at__gte": "2000-01-01 00:00:00+00:00"})
    assert len(response.context["cl"].result_list) == 3  # the date filter
