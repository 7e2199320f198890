"""The "Most voted" order, refreshed from the vote totals, and the proposal list's word search."""

from unittest import mock

import pytest
from django.core.cache import cache

from consultations import services, tasks, views
from consultations.models import Proposal, ProposalRank
from consultations.selectors import proposal_public_list
from consultations.services import participant_for_session, popular_rank_refresh, vote_cast

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _vote(proposal, voters: int, key: str = "agree"):
    for i in range(voters):
        vote_cast(
            participant=participant_for_session(session_key=f"s{proposal.pk}-{i}"),
            proposal=proposal,
            key=key,
        )


def _popular(consultation):
    return [p.content for p in proposal_public_list(consultation=consultation, sort="popular")]


@pytest.fixture
def three(db):
    consultation = ConsultationFactory()
    a, b, c = (
        ProposalFactory(consultation=consultation, content=f"Il faut {w}") for w in ("a", "b", "c")
    )
    return consultation, a, b, c


def _ranked(proposal) -> int | None:
    return ProposalRank.objects.filter(proposal=proposal).values_list("votes", flat=True).first()


def test_votes_move_the_order_when_it_is_refreshed_not_before(three):
    consultation, a, b, c = three
    assert popular_rank_refresh(consultation_id=consultation.pk) == 3  # ranked, all at 0
    assert _popular(consultation) == ["Il faut c", "Il faut b", "Il faut a"]  # newest first
    _vote(b, 2)
    _vote(c, 1)
    # The totals are live; the order is the last ranking's.
    assert Proposal.objects.get(pk=b.pk).votes_total == 2
    assert _popular(consultation) == ["Il faut c", "Il faut b", "Il faut a"]
    assert popular_rank_refresh(consultation_id=consultation.pk) == 2
    assert _popular(consultation) == ["Il faut b", "Il faut c", "Il faut a"]
    assert popular_rank_refresh(consultation_id=consultation.pk) == 0  # idempotent
    _vote(a, 3)
    d = ProposalFactory(consultation=consultation, content="Il faut d")
    assert "Il faut d" not in _popular(consultation)  # accepted since: ranked at the next refresh
    assert popular_rank_refresh(consultation_id=consultation.pk) == 2
    assert _popular(consultation) == ["Il faut a", "Il faut b", "Il faut c", "Il faut d"]
    assert _ranked(d) == 0


def test_only_accepted_proposals_are_listed_and_ranks_follow_deletion(three):
    consultation, a, b, c = three
    popular_rank_refresh(consultation_id=consultation.pk)
    Proposal.objects.filter(pk=b.pk).update(status=Proposal.Status.REFUSED, refusal_reason="spam")
    assert _popular(consultation) == ["Il faut c", "Il faut a"]
    c.delete()
    assert not ProposalRank.objects.filter(proposal_id=c.pk).exists()
    assert _popular(consultation) == ["Il faut a"]


def test_a_changed_vote_keeps_the_total(three):
    consultation, a, *_ = three
    participant = participant_for_session(session_key="changer")
    vote_cast(participant=participant, proposal=a, key="agree")
    vote_cast(participant=participant, proposal=a, key="disagree")
    a.refresh_from_db()
    assert a.votes_total == 1
    assert dict(a.counters.values_list("key", "count")) == {"agree": 0, "disagree": 1}


def test_reading_the_most_voted_order_refreshes_it_at_most_once_a_period(client, three, settings):
    consultation, a, b, c = three
    settings.CONCORDE_POPULAR_RANK_SECONDS = 60
    url = consultation.get_absolute_url()
    _vote(a, 1)
    # Never ranked: its first reader ranks it, and that is this period's refresh.
    html = client.get(url, {"sort": "popular"}).content.decode()
    assert html.index("Il faut a") < html.index("Il faut c") < html.index("Il faut b")
    _vote(b, 2)
    html = client.get(url, {"sort": "popular"}).content.decode()
    assert (
        html.index("Il faut a") < html.index("Il faut c") < html.index("Il faut b")
    )  # within the period
    cache.delete(f"popular-rank:{consultation.pk}")  # the period is over
    html = client.get(url, {"sort": "popular"}).content.decode()
    assert html.index("Il faut b") < html.index("Il faut a") < html.index("Il faut c")


def test_other_orders_ask_for_no_ranking(client, three):
    consultation, *_ = three
    with mock.patch.object(views, "popular_rank_refresh_soon") as asked:
        for sort in ("recent", "random"):
            client.get(consultation.get_absolute_url(), {"sort": sort})
    asked.assert_not_called()
    assert not ProposalRank.objects.exists()
    assert services.popular_rank_refresh_soon(consultation=consultation) is True
    assert ProposalRank.objects.filter(consultation=consultation).count() == 3  # no broker: inline
    assert services.popular_rank_refresh_soon(consultation=consultation) is False  # same period


def test_the_refresh_is_a_task_once_a_broker_is_there(three):
    consultation, *_ = three
    with mock.patch("config.outbox.send_or_spool") as sent:
        assert services.popular_rank_refresh_soon(consultation=consultation) is True
    sent.assert_called_once_with(tasks.popular_rank_refresh, (consultation.pk,))
    assert not ProposalRank.objects.exists()  # nothing ranked in the request


def test_a_cache_outage_keeps_the_last_ranking_and_the_page(client, three):
    consultation, a, b, c = three
    popular_rank_refresh(consultation_id=consultation.pk)
    _vote(a, 1)
    with mock.patch.object(cache, "add", side_effect=ConnectionError("redis down")):
        response = client.get(consultation.get_absolute_url(), {"sort": "popular"})
        assert services.popular_rank_refresh_soon(consultation=consultation) is False
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("Il faut c") < html.index("Il faut b") < html.index("Il faut a")
    assert _ranked(a) == 0


def test_before_its_first_ranking_the_order_follows_the_live_totals(client, three):
    consultation, a, b, c = three
    _vote(a, 2)
    _vote(b, 1)
    assert _popular(consultation) == ["Il faut a", "Il faut b", "Il faut c"]
    with mock.patch.object(cache, "add", side_effect=ConnectionError("redis down")):
        html = client.get(consultation.get_absolute_url(), {"sort": "popular"}).content.decode()
    assert html.index("Il faut a") < html.index("Il faut b") < html.index("Il faut c")
    assert not ProposalRank.objects.exists()


def test_counters_rebuild_ranks_as_it_counts(three):
    consultation, a, *_ = three
    _vote(a, 2)
    Proposal.objects.filter(pk=a.pk).update(votes_total=0)
    services.counters_rebuild(consultation=consultation)
    assert Proposal.objects.get(pk=a.pk).votes_total == 2
    assert _ranked(a) == 2


@pytest.mark.parametrize("bad", ["1", None, 1.5, True, [1]])
def test_the_task_refuses_a_bad_argument(bad):
    with pytest.raises(ValueError, match="must be an integer"):
        tasks.popular_rank_refresh(bad)


def test_the_task_ranks_one_consultation(three):
    consultation, a, *_ = three
    other = ProposalFactory()
    _vote(a, 1)
    _vote(other, 1)
    assert tasks.popular_rank_refresh.delay(consultation.pk).get() == 3
    assert _ranked(a) == 1 and _ranked(other) is None


def test_word_search_ignores_case_and_accents_case_and_takes_words_literally(client):
    consultation = ConsultationFactory()
    for text in (
        "Il faut protéger la forêt",
        "Il faut des ÉCOLES ouvertes",
        "Il faut (vraiment) 50% de bio",
        "Il faut ouvrir les écoles le soir",
    ):
        ProposalFactory(consultation=consultation, content=text)

    def found(q):
        return sorted(p.content for p in proposal_public_list(consultation=consultation, query=q))

    assert found("FORÊT") == ["Il faut protéger la forêt"]
    assert found("écoles") == ["Il faut des ÉCOLES ouvertes", "Il faut ouvrir les écoles le soir"]
    assert found("(vraiment) 50%") == ["Il faut (vraiment) 50% de bio"]
    assert found(".*") == [] and found("[a-z]") == []
    html = client.get(consultation.get_absolute_url(), {"q": "forêt"}).content.decode()
    assert "Il faut protéger la forêt" in html and "ÉCOLES" not in html


def test_the_pager_counts_from_the_live_counters_and_searches_count_their_matches(
    client, django_assert_max_num_queries
):
    consultation = ConsultationFactory()
    for i in range(25):
        ProposalFactory(consultation=consultation, content=f"Il faut la proposition {i:02d}")
    url = consultation.get_absolute_url()
    for sort in ("recent", "popular", "controversial", "random"):
        html = client.get(url, {"sort": sort, "page": 2}).content.decode()
        assert "25 proposals" in html and "Page 2 of 2" in html, sort
    assert html.count("Il faut la proposition") == 5
    # The count of the page without words is the cached counters' (no count of its own).
    with django_assert_max_num_queries(50) as queries:
        client.get(url, {"sort": "recent"})
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not [
        sql for sql in counts if "consultations_proposal" in sql and "participant" not in sql
    ]
    html = client.get(url, {"q": "proposition 1"}).content.decode()
    assert "10 proposals" in html and "Page" not in html
