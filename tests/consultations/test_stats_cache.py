"""``consultation_stats`` is cached per consultation and current run; a cache outage computes."""

from unittest import mock

import pytest
from django.core.cache import cache

from consensus import services as engine_services
from consensus.models import EngineRun
from consultations import selectors
from consultations.selectors import consultation_stats, stats_cache_key
from consultations.services import vote_cast

from ..factories import ParticipantFactory, ProposalFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cache(settings):
    settings.CONCORDE_STATS_CACHE_SECONDS = 30
    cache.clear()
    yield
    cache.clear()


def _voted_proposal():
    proposal = ProposalFactory()
    for _ in range(3):
        vote_cast(participant=ParticipantFactory(), proposal=proposal, key="agree")
    return proposal


def _done_run(consultation):
    return EngineRun.objects.create(consultation=consultation, status=EngineRun.Status.DONE)


def test_the_second_call_reads_the_cache_not_the_votes(django_assert_num_queries):
    consultation = _voted_proposal().consultation
    with django_assert_num_queries(2):  # proposals aggregate + distinct participants
        first = consultation_stats(consultation=consultation)
    with django_assert_num_queries(0):
        second = consultation_stats(consultation=consultation)
    assert first == second
    assert first["participants"] == 3 and first["votes"] == 3 and first["proposals"] == 1


def test_a_ttl_of_zero_is_not_cached(settings, django_assert_num_queries):
    settings.CONCORDE_STATS_CACHE_SECONDS = 0
    consultation = _voted_proposal().consultation
    consultation_stats(consultation=consultation)
    with django_assert_num_queries(2):
        consultation_stats(consultation=consultation)


def test_a_new_current_run_changes_the_key_and_drops_the_entry(django_assert_num_queries):
    proposal = _voted_proposal()
    consultation = proposal.consultation
    old_key = stats_cache_key(consultation)
    consultation_stats(consultation=consultation)
    assert cache.get(old_key) is not None
    vote_cast(participant=ParticipantFactory(), proposal=proposal, key="agree")

    run = _done_run(consultation)
    engine_services.engine_run_make_current(run=run)
    consultation.refresh_from_db()
    assert consultation.current_run_id == run.pk
    new_key = stats_cache_key(consultation)
    assert new_key != old_key
    with django_assert_num_queries(2):
        stats = consultation_stats(consultation=consultation)
    assert stats["participants"] == 4
    # the explicit invalidation: the entry under the new run's key is deleted on make-current
    engine_services.engine_run_make_current(run=run)
    assert cache.get(new_key) is None


def test_a_broken_cache_still_gives_correct_stats():
    consultation = _voted_proposal().consultation
    broken = mock.Mock()
    broken.get.side_effect = ConnectionError("redis down")
    broken.set.side_effect = ConnectionError("redis down")
    broken.delete_many.side_effect = ConnectionError("redis down")
    with mock.patch.object(selectors, "cache", broken):
        stats = consultation_stats(consultation=consultation)
        engine_services.engine_run_make_current(run=_done_run(consultation))  # does not raise
    assert stats["participants"] == 3 and stats["votes"] == 3
    assert broken.get.called and broken.set.called


def test_votes_do_not_depend_on_the_cache():
    proposal = ProposalFactory()
    broken = mock.Mock()
    for name in ("get", "set", "delete", "delete_many", "get_or_set", "incr", "add"):
        getattr(broken, name).side_effect = ConnectionError("redis down")
    with mock.patch.object(selectors, "cache", broken):
        vote_cast(participant=ParticipantFactory(), proposal=proposal, key="agree")
        stats = consultation_stats(consultation=proposal.consultation)
    assert stats["participants"] == 1 and stats["votes"] == 1
