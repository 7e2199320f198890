"""The per-process sequence pool: a stale pool keeps serving while a background thread rebuilds it.

The rebuild thread opens its own database connection, so these tests commit their rows
(``transaction=True``) for it to see them.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import override_settings

from consultations import sequence_cache
from tests.factories import ProposalFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def consultation():
    sequence_cache.sequence_pools_clear()
    proposal = ProposalFactory()
    ProposalFactory.create_batch(2, consultation=proposal.consultation)
    yield proposal.consultation
    sequence_cache.wait_for_rebuilds(10)
    sequence_cache.sequence_pools_clear()


@pytest.fixture
def hold_builds(monkeypatch):
    """A function that makes pool builds wait until the returned event is set.

    It returns (release event, list of the consultation pks built so far).
    """
    import threading

    release = threading.Event()
    calls: list[int] = []

    def install():
        real_build = sequence_cache.build_pool

        def slow_build(c):
            calls.append(c.pk)
            release.wait(10)
            return real_build(c)

        monkeypatch.setattr(sequence_cache, "build_pool", slow_build)
        return release, calls

    yield install
    release.set()


def _another_process_invalidates(consultation) -> None:
    # What `sequence_pool_invalidate` does seen from another process: the shared version
    # changes, this process's own pool stays in memory.
    cache.set(sequence_cache._version_key(consultation.pk), object().__repr__(), None)


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_a_stale_pool_is_served_while_a_thread_rebuilds_it(consultation):
    first = sequence_cache.sequence_pool_get(consultation)
    added = ProposalFactory(consultation=consultation)
    _another_process_invalidates(consultation)
    served = sequence_cache.stats["stale_served"]

    assert sequence_cache.sequence_pool_get(consultation) is first
    assert sequence_cache.stats["stale_served"] == served + 1
    sequence_cache.wait_for_rebuilds(10)

    rebuilt = sequence_cache.sequence_pool_get(consultation)
    assert rebuilt is not first
    assert added.pk in rebuilt.index and added.pk not in first.index
    assert sequence_cache.sequence_pool_get(consultation) is rebuilt  # fresh again: a hit


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_one_rebuild_at_a_time_per_consultation(consultation, hold_builds):
    first = sequence_cache.sequence_pool_get(consultation)
    release, calls = hold_builds()
    _another_process_invalidates(consultation)
    for _ in range(5):
        assert sequence_cache.sequence_pool_get(consultation) is first
    release.set()
    sequence_cache.wait_for_rebuilds(10)
    assert calls == [consultation.pk]


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_a_failed_rebuild_keeps_the_stale_pool_and_says_why(consultation, monkeypatch, caplog):
    first = sequence_cache.sequence_pool_get(consultation)

    def broken(c):
        raise RuntimeError("database went away")

    monkeypatch.setattr(sequence_cache, "build_pool", broken)
    _another_process_invalidates(consultation)
    assert sequence_cache.sequence_pool_get(consultation) is first
    sequence_cache.wait_for_rebuilds(10)
    assert "background rebuild failed" in caplog.text
    assert "database went away" in caplog.text
    # Still stale: the next start serves it and tries again.
    assert sequence_cache.sequence_pool_get(consultation) is first


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60, CONCORDE_SEQUENCE_POOL_BACKGROUND=False)
def test_without_background_rebuilds_the_request_rebuilds(consultation):
    first = sequence_cache.sequence_pool_get(consultation)
    added = ProposalFactory(consultation=consultation)
    _another_process_invalidates(consultation)
    rebuilt = sequence_cache.sequence_pool_get(consultation)
    assert rebuilt is not first and added.pk in rebuilt.index


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_invalidation_makes_this_process_rebuild_in_the_background(consultation):
    first = sequence_cache.sequence_pool_get(consultation)
    added = ProposalFactory(consultation=consultation)
    sequence_cache.sequence_pool_invalidate(consultation.pk)
    assert sequence_cache.sequence_pool_get(consultation) is first  # no rebuild in the request
    sequence_cache.wait_for_rebuilds(10)
    assert added.pk in sequence_cache.sequence_pool_get(consultation).index


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_invalidation_the_cache_cannot_publish_drops_this_process_pool(consultation, monkeypatch):
    first = sequence_cache.sequence_pool_get(consultation)
    added = ProposalFactory(consultation=consultation)
    # config.cache.ResilientRedisCache drops writes while Redis is down and says so by is_up().
    monkeypatch.setattr(sequence_cache.cache, "is_up", lambda: False, raising=False)
    sequence_cache.sequence_pool_invalidate(consultation.pk)
    rebuilt = sequence_cache.sequence_pool_get(consultation)
    assert rebuilt is not first and added.pk in rebuilt.index


def _newest(consultation, n):
    from consultations.models import Proposal

    rows = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    return set(rows.order_by("-created_at").values_list("pk", flat=True)[:n])


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_a_first_start_gets_the_full_pool_when_it_builds_quickly(consultation):
    interim = sequence_cache.stats["interim"]
    pool = sequence_cache.sequence_pool_get(consultation)
    assert set(pool.index) == _newest(consultation, 100)
    assert sequence_cache.stats["interim"] == interim


@override_settings(
    CONCORDE_SEQUENCE_POOL_SECONDS=60,
    CONCORDE_SEQUENCE_POOL_FIRST_WAIT=0.05,
    CONCORDE_SEQUENCE_POOL_INTERIM=2,
)
def test_a_slow_first_build_serves_the_newest_proposals_until_the_full_pool_is_in(
    consultation, hold_builds
):
    release, calls = hold_builds()
    interim = sequence_cache.sequence_pool_get(consultation)
    assert set(interim.index) == _newest(consultation, 2)  # 2 of the 3 proposals
    # The next starts keep serving it, and do not start a second build.
    assert sequence_cache.sequence_pool_get(consultation) is interim
    assert calls == [consultation.pk]
    release.set()
    sequence_cache.wait_for_rebuilds(10)
    full = sequence_cache.sequence_pool_get(consultation)
    assert set(full.index) == _newest(consultation, 100) and len(full.index) == 3


@override_settings(
    CONCORDE_SEQUENCE_POOL_SECONDS=60,
    CONCORDE_SEQUENCE_POOL_FIRST_WAIT=0.05,
    CONCORDE_SEQUENCE_POOL_INTERIM=2,
)
def test_a_failed_first_build_keeps_the_interim_pool_and_tries_again(
    consultation, monkeypatch, caplog
):
    calls = []

    def broken(c):
        calls.append(c.pk)
        raise RuntimeError("database went away")

    monkeypatch.setattr(sequence_cache, "build_pool", broken)
    interim = sequence_cache.sequence_pool_get(consultation)
    sequence_cache.wait_for_rebuilds(10)
    assert "database went away" in caplog.text
    assert len(interim.index) == 2
    assert sequence_cache.sequence_pool_get(consultation) is interim  # stale: served, retried
    sequence_cache.wait_for_rebuilds(10)
    assert calls == [consultation.pk, consultation.pk]
