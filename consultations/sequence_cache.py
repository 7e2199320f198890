"""The sequence candidate pool of a consultation, built once and reused by the requests.

Building a ``CandidatePool`` reads every accepted proposal of the consultation and its counters
(``selectors.sequence_candidates``): 1.3 s at 20,000 proposals on the benchmark machine, while
choosing the cards of one sequence on a built pool takes milliseconds (docs/scaling.md). So each
web process keeps the pool of each consultation in memory and rebuilds it when it is stale:

- older than ``CONCORDE_SEQUENCE_POOL_SECONDS`` (default 30; 0 turns the cache off, the default
  under pytest so that tests see the rows they write);
- its *version* changed: ``sequence_pool_invalidate`` (called when a proposal enters or leaves
  the accepted set: moderation, auto-accepted proposals) bumps a per-consultation key in the
  shared cache (Redis), so every process rebuilds at its next sequence start;
- the consultation took ``CONCORDE_SEQUENCE_POOL_REBUILD_VOTES`` votes (default: as many as the
  pool has proposals, at least 500) since the build: counted in the shared cache by
  ``sequence_pool_note_vote``, one ``INCR`` per vote. Between rebuilds the process also adds
  the votes it records itself to its pool (``CandidatePool.add_counts``), so its own traffic
  moves proposals from "new" to "tested" without waiting.

A stale pool is not rebuilt inside the request that finds it stale: that request gets the stale
pool, and one background thread per process and consultation builds the new one and swaps it in
(``CONCORDE_SEQUENCE_POOL_BACKGROUND``, default on). So a rebuild (0.4 s at 20,000 proposals on
an idle machine, tens of seconds at millions) no longer lands on a participant every 30 seconds;
a start that finds its pool stale measured 6.6 ms (docs/bench_sequence_scale.md). A process that
has no pool yet for the consultation (its first sequence start after a boot or a worker recycle)
starts the same background build and waits for it up to ``CONCORDE_SEQUENCE_POOL_FIRST_WAIT``
seconds (1); past that it serves an interim pool of the ``CONCORDE_SEQUENCE_POOL_INTERIM``
newest accepted proposals (2,000; one bounded read) until the full pool is built, instead of
holding the request (and a sync worker, killed at its timeout) for the whole build.

The shared keys are read with one ``get_many`` per sequence start. With Redis down the cache
answers misses (``config.cache``) and only the age rule applies: pools are at most
``CONCORDE_SEQUENCE_POOL_SECONDS`` old. A stale pool can only offer a card that became
unvotable; the vote path checks the proposal's status itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connections

from consensus.engine import scores as sc

from .selectors import sequence_candidates
from .sequence import CandidatePool

logger = logging.getLogger(__name__)

DEFAULT_SECONDS = 30
DEFAULT_MIN_REBUILD_VOTES = 500


@dataclass
class _Entry:
    pool: CandidatePool
    built_at: float  # time.monotonic()
    version: object
    votes_at_build: int


_pools: dict[int, _Entry] = {}
_building: dict[int, threading.Thread] = {}  # background rebuilds in flight, by consultation
_lock = threading.Lock()
# Per process, for tests and benchmarks.
stats = {"hits": 0, "builds": 0, "stale_served": 0, "interim": 0}


def _version_key(consultation_id: int) -> str:
    return f"seqpool:version:{consultation_id}"


def _votes_key(consultation_id: int) -> str:
    return f"seqpool:votes:{consultation_id}"


def pool_seconds() -> int:
    return int(getattr(settings, "CONCORDE_SEQUENCE_POOL_SECONDS", DEFAULT_SECONDS))


def _rebuild_votes(pool: CandidatePool) -> int:
    configured = getattr(settings, "CONCORDE_SEQUENCE_POOL_REBUILD_VOTES", 0)
    return int(configured) if configured else max(DEFAULT_MIN_REBUILD_VOTES, len(pool))


def _shared_state(consultation_id: int) -> tuple[object, int]:
    try:
        values = cache.get_many([_version_key(consultation_id), _votes_key(consultation_id)])
    except Exception:  # noqa: BLE001 - a cache outage leaves only the age rule
        logger.warning("sequence pool: shared state unavailable", exc_info=True)
        values = {}
    return values.get(_version_key(consultation_id)), int(
        values.get(_votes_key(consultation_id)) or 0
    )


def build_pool(consultation) -> CandidatePool:
    """A fresh pool of every accepted proposal of ``consultation`` (two queries)."""
    return CandidatePool.from_candidates(sequence_candidates(consultation=consultation))


def background_rebuilds() -> bool:
    return bool(getattr(settings, "CONCORDE_SEQUENCE_POOL_BACKGROUND", True))


def _build_entry(consultation, version: object, votes: int) -> _Entry:
    started = time.monotonic()
    pool = build_pool(consultation)
    stats["builds"] += 1
    entry = _Entry(pool, started, version, votes)
    with _lock:
        _pools[consultation.pk] = entry
    return entry


def _rebuild_in_background(consultation, version: object, votes: int) -> None:
    """Start one thread that rebuilds the pool, unless one is already at it in this process."""

    def run() -> None:
        try:
            _build_entry(consultation, version, votes)
        except Exception:  # noqa: BLE001 - the stale pool stays; the next start tries again
            logger.exception("sequence pool: background rebuild failed")
        finally:
            connections.close_all()  # this thread's own database connection
            with _lock:
                _building.pop(consultation.pk, None)

    with _lock:
        if consultation.pk in _building:
            return
        thread = threading.Thread(target=run, name=f"seqpool-{consultation.pk}", daemon=True)
        _building[consultation.pk] = thread
    thread.start()


def wait_for_rebuilds(timeout: float | None = None) -> None:
    """Wait for this process's background rebuilds (tests, benchmarks, shutdown)."""
    for thread in list(_building.values()):
        thread.join(timeout)


def _first_pool(consultation, version: object, votes: int) -> CandidatePool:
    """A pool for a process that has none: the full build if it is quick, else an interim one.

    The full build starts in the background thread of `_rebuild_in_background` and the request
    waits up to ``CONCORDE_SEQUENCE_POOL_FIRST_WAIT`` seconds for it. If it is not done by then
    (a large consultation), the request gets a pool of the ``CONCORDE_SEQUENCE_POOL_INTERIM``
    newest accepted proposals (one bounded read), which this process keeps serving, as a stale
    pool, until the full one replaces it. A failed full build leaves the interim pool stale, so
    the next start tries again.
    """
    _rebuild_in_background(consultation, version, votes)
    thread = _building.get(consultation.pk)
    if thread is not None:
        thread.join(float(getattr(settings, "CONCORDE_SEQUENCE_POOL_FIRST_WAIT", 1.0)))
    entry = _pools.get(consultation.pk)
    if entry is not None:
        return entry.pool
    newest = int(getattr(settings, "CONCORDE_SEQUENCE_POOL_INTERIM", 2_000))
    interim = CandidatePool.from_candidates(
        sequence_candidates(consultation=consultation, newest=newest)
    )
    stats["interim"] += 1
    with _lock:
        # built_at -inf: stale at once, so starts keep serving it while the full build runs
        # and start another one if that build failed.
        entry = _pools.setdefault(consultation.pk, _Entry(interim, float("-inf"), version, votes))
    return entry.pool


def sequence_pool_get(consultation) -> CandidatePool:
    """The consultation's candidate pool: this process's cached one, or a new build.

    A stale cached pool is returned as it is while a background thread rebuilds it (see the
    module docstring); a process without any pool for the consultation waits briefly for its
    first build, or serves an interim pool of the newest proposals (`_first_pool`).
    """
    seconds = pool_seconds()
    if seconds <= 0:
        stats["builds"] += 1
        return build_pool(consultation)
    version, votes = _shared_state(consultation.pk)
    entry = _pools.get(consultation.pk)
    if entry is None:
        if not background_rebuilds():
            return _build_entry(consultation, version, votes).pool
        return _first_pool(consultation, version, votes)
    if (
        time.monotonic() - entry.built_at < seconds
        and entry.version == version
        and votes - entry.votes_at_build < _rebuild_votes(entry.pool)
    ):
        stats["hits"] += 1
        return entry.pool
    if not background_rebuilds():
        return _build_entry(consultation, version, votes).pool
    _rebuild_in_background(consultation, version, votes)
    stats["stale_served"] += 1
    return entry.pool


def sequence_pool_invalidate(consultation_id: int) -> None:
    """Make every process rebuild the consultation's pool at its next sequence start.

    Call it after a commit that adds a proposal to the accepted set or takes one out. The
    shared version changes, so every process (this one included) finds its pool stale and
    rebuilds it in the background. When the version cannot be published, or background
    rebuilds are off, this process drops its pool so that its next start rebuilds at once.
    Never raises: with the cache down, other processes rebuild within ``pool_seconds()``.
    """
    try:
        cache.set(_version_key(consultation_id), time.time_ns(), None)
        # The Redis cache drops writes while Redis is down (config.cache): ask it.
        published = getattr(cache, "is_up", lambda: True)()
    except Exception:  # noqa: BLE001
        logger.warning("sequence pool: could not publish an invalidation", exc_info=True)
        published = False
    if not published or not background_rebuilds():
        with _lock:
            _pools.pop(consultation_id, None)


def sequence_pool_note_vote(
    *, consultation_id: int, proposal_id: int, changes: dict[tuple[str, str], int]
) -> None:
    """Count a recorded vote: the shared counter and this process's pool.

    ``changes`` maps (key, trust) to +1/-1 (a changed vote withdraws the old key). Call it after
    the commit. Never raises.
    """
    if pool_seconds() <= 0:
        return
    key = _votes_key(consultation_id)
    try:
        try:
            cache.incr(key)
        except ValueError:  # not there yet (or the cache is down: add does nothing then)
            cache.add(key, 1, None)
    except Exception:  # noqa: BLE001
        logger.warning("sequence pool: could not count a vote", exc_info=True)
    entry = _pools.get(consultation_id)
    row = entry.pool.index.get(proposal_id) if entry is not None else None
    if row is None:
        return
    columns = {k: i for i, k in enumerate(sc.KEYS)}
    # Sequence votes count in both the verified and the sequence counts (add_counts with
    # sequence=True), trusted ones in the verified counts only; untrusted ones in neither.
    for trust_level, sequence in (("trusted", False), ("sequence", True)):
        delta = np.zeros((1, len(sc.KEYS)))
        for (vote_key, trust), n in changes.items():
            if trust == trust_level and vote_key in columns:
                delta[0, columns[vote_key]] += n
        if delta.any():
            with _lock:
                entry.pool.add_counts(rows=np.array([row]), delta=delta, sequence=sequence)


def sequence_pools_clear() -> None:
    """Forget every pool of this process (tests)."""
    with _lock:
        _pools.clear()
