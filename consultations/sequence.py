"""Main ("standard") sequence selection, after Make.org (research notes §2.3-2.4).

Pure functions over plain data, no Django: the selector layer loads the
accepted proposals of a consultation into a ``CandidatePool`` (arrays, built
once and reusable across requests) and calls ``select_sequence`` per request.

One request:

1. Drop the proposals already voted and the included ones; included ids
   always come first.
2. Pools from the number of *sequence* votes ``N_seq``: **new** below
   ``new_votes_threshold``, **tested** below ``tested_max_votes`` (and above
   the optional score thresholds), otherwise **excluded**.
3. New quota ``ceil(new_ratio * size)`` (minus included proposals that are
   new), oldest first, one per author.
4. Tested quota = what is left. Up to ``max_tested_candidates`` tested
   candidates are drawn at random; each gets Thompson samples
   (``consensus.engine.scores``). Sampled zone consensus -> "top", ranked by
   the top_score sample; sampled zone controversy -> "controversy", ranked by
   the controversy sample; the rest is dropped for this request.
5. De-duplication: keywords carried by at least
   ``floor(keywords_threshold * #tested)`` candidates are ignored; then,
   repeatedly, among the first ``candidates_pool_size`` candidates the one
   with the fewest sequence votes is picked, and every candidate with the same
   author or a shared non-ignored keyword is removed. Controversies first,
   then tops.
6. Output = included + shuffle(new + tested); a fallback fills up to ``size``
   with the newest remaining candidates.

Deliberate differences from Make.org, all small:

- controversy slots are ``round_half_up(n_tested * controversy_ratio)`` but at
  least 1 when there is a tested slot and the ratio is positive (Make.org gives
  0 below 5 tested slots); unused controversy slots go to tops;
- authors of included proposals are blocked like authors of new ones, and the
  tops also avoid the non-ignored keywords of the chosen controversies;
- no 3 x size cap on the new candidates fetched (an Elasticsearch artefact).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from consensus.engine import scores as sc

Reason = Literal["included", "new", "top", "controversy", "fallback"]

POOL_NEW, POOL_TESTED, POOL_EXCLUDED = 0, 1, 2
POOLS: tuple[str, ...] = ("new", "tested", "excluded")


@dataclass(frozen=True, slots=True)
class SequenceSettings:
    """Per-consultation sequence configuration (Make.org defaults)."""

    size: int = 12
    new_ratio: float = 0.3
    controversy_ratio: float = 0.1
    new_votes_threshold: int = 10
    tested_max_votes: int = 1500
    non_sequence_votes_weight: float = 0.5
    keywords_threshold: float = 0.2
    candidates_pool_size: int = 10
    # Tested candidates considered per request, drawn at random (Make.org: 1000).
    # None considers the whole tested pool.
    max_tested_candidates: int | None = 1000
    # Optional thresholds to stay in the tested pool (unset in Make.org's defaults).
    tested_engagement_threshold: float | None = None
    tested_score_threshold: float | None = None
    tested_controversy_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An accepted proposal as seen by the selector.

    ``verified`` and ``sequence`` map vote and qualification keys
    (``consensus.engine.scores.KEYS``) to counts; missing keys are zero.
    ``created_at`` is anything comparable (datetime, timestamp).
    """

    id: Hashable
    author_key: Hashable
    created_at: Any
    keywords: frozenset[str] = frozenset()
    verified: Mapping[str, int] = field(default_factory=dict)
    sequence: Mapping[str, int] = field(default_factory=dict)

    @property
    def sequence_votes(self) -> int:
        return sum(self.sequence.get(k, 0) for k in sc.VOTE_KEYS)


@dataclass(frozen=True, slots=True)
class SequenceCard:
    id: Hashable
    reason: Reason


class CandidatePool:
    """Candidates of one consultation as arrays; build once, select many times.

    Building is O(n) Python work (about 0.1 s for 20,000 candidates); each
    ``select_sequence`` call on a built pool is a few milliseconds.
    """

    def __init__(
        self,
        *,
        ids: Sequence[Hashable],
        author_keys: Sequence[Hashable],
        created_at: Sequence[Any],
        keywords: Sequence[frozenset[str]],
        verified: sc.Counts,
        sequence: sc.Counts,
    ) -> None:
        n = len(ids)
        if not (len(author_keys) == len(created_at) == len(keywords) == n):
            raise ValueError("ids, author_keys, created_at and keywords must have the same length")
        self.ids: list[Hashable] = list(ids)
        self.index: dict[Hashable, int] = {id_: i for i, id_ in enumerate(self.ids)}
        if len(self.index) != n:
            raise ValueError("candidate ids must be unique")
        self.author_keys: list[Hashable] = list(author_keys)
        codes: dict[Hashable, int] = {}
        self.author_codes = np.array(
            [codes.setdefault(a, len(codes)) for a in self.author_keys], dtype=np.int64
        )
        # Tuples of strings, not frozensets: the garbage collector stops tracking such tuples,
        # while every set stays tracked, and each full collection walks all of them (100,000
        # frozensets added 25 ms to every full collection of a web process).
        self.keywords: list[tuple[str, ...]] = [tuple(sorted(set(k))) for k in keywords]
        # Keywords as (row, code) pairs, to count them over any subset at numpy speed.
        vocabulary: dict[str, int] = {}
        pairs = [
            (row, vocabulary.setdefault(k, len(vocabulary)))
            for row, kws in enumerate(self.keywords)
            for k in kws
        ]
        self.keyword_names: list[str] = list(vocabulary)
        pair_array = np.array(pairs, dtype=np.int64).reshape(len(pairs), 2)
        self._keyword_rows, self._keyword_codes = pair_array[:, 0], pair_array[:, 1]
        self.sequence = sc.counts_matrix(sequence, n=n).copy() if n else np.zeros((0, len(sc.KEYS)))
        self.verified = sc.counts_matrix(verified, n=n).copy() if n else np.zeros((0, len(sc.KEYS)))
        if self.sequence.shape != (n, len(sc.KEYS)) or self.verified.shape != (n, len(sc.KEYS)):
            raise ValueError("count matrices must have one row per candidate")
        self.sequence_votes = self.sequence[:, : len(sc.VOTE_KEYS)].sum(axis=1)
        created = list(created_at)
        self.oldest_first = np.array(
            sorted(range(n), key=lambda i: (created[i], i)), dtype=np.int64
        )
        self.newest_first = np.array(
            sorted(range(n), key=lambda i: (created[i], -i), reverse=True), dtype=np.int64
        )
        self._pools_cache: dict[SequenceSettings, np.ndarray] = {}

    @classmethod
    def from_candidates(cls, candidates: Iterable[Candidate]) -> CandidatePool:
        candidates = list(candidates)
        return cls(
            ids=[c.id for c in candidates],
            author_keys=[c.author_key for c in candidates],
            created_at=[c.created_at for c in candidates],
            keywords=[c.keywords for c in candidates],
            verified=_rows(c.verified for c in candidates),
            sequence=_rows(c.sequence for c in candidates),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def add_counts(self, *, rows: np.ndarray, delta: np.ndarray, sequence: bool = True) -> None:
        """Add new votes to the counters of ``rows`` (one ``len(KEYS)`` row of delta each).

        Verified counts always grow; sequence counts too when ``sequence``.
        Rows may repeat. Keeps a long-lived pool (or a simulation) up to date.
        """
        rows = np.asarray(rows, dtype=np.int64)
        np.add.at(self.verified, rows, delta)
        if sequence:
            np.add.at(self.sequence, rows, delta)
            self.sequence_votes[rows] = self.sequence[rows, : len(sc.VOTE_KEYS)].sum(axis=1)
        self._pools_cache.clear()

    def ignored_keywords(self, rows: np.ndarray, *, threshold: float) -> frozenset[str]:
        """Keywords carried by at least ``floor(threshold * len(rows))`` of ``rows``.

        They are too common to tell proposals apart, so they block nothing.
        """
        minimum = math.floor(threshold * len(rows))
        selected = np.zeros(len(self.ids), dtype=bool)
        selected[rows] = True
        counts = np.bincount(
            self._keyword_codes[selected[self._keyword_rows]], minlength=len(self.keyword_names)
        )
        present = counts > 0
        return frozenset(
            self.keyword_names[c] for c in np.flatnonzero(present & (counts >= minimum)).tolist()
        )

    def pools(self, settings: SequenceSettings) -> np.ndarray:
        """Pool code (``POOL_NEW``/``POOL_TESTED``/``POOL_EXCLUDED``) per candidate."""
        cached = self._pools_cache.get(settings)
        if cached is None:
            cached = proposal_pools(
                sequence_votes=self.sequence_votes,
                settings=settings,
                verified=self.verified,
                sequence=self.sequence,
            )
            self._pools_cache[settings] = cached
        return cached


def _rows(mappings: Iterable[Mapping[str, int]]) -> np.ndarray:
    keys = sc.KEYS
    rows = [[m.get(k, 0) for k in keys] for m in mappings]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(keys))


def proposal_pools(
    *,
    sequence_votes: np.ndarray,
    settings: SequenceSettings,
    verified: sc.Counts | None = None,
    sequence: sc.Counts | None = None,
) -> np.ndarray:
    """Pools (§2.3) as codes into ``POOLS``.

    new: ``N_seq < new_votes_threshold``; tested: ``N_seq < tested_max_votes``
    and, when set, ``engagement.lower_bound > engagement threshold`` and
    (``top_score.lower_bound >= score threshold`` or
    ``controversy.lower_bound >= controversy threshold``); else excluded.
    The counts are needed only when a score threshold is set.
    """
    votes = np.asarray(sequence_votes)
    pools = np.full(votes.shape, POOL_EXCLUDED, dtype=np.int8)
    tested = (votes >= settings.new_votes_threshold) & (votes < settings.tested_max_votes)
    s = settings
    if (
        s.tested_engagement_threshold is not None
        or s.tested_score_threshold is not None
        or (s.tested_controversy_threshold is not None)
    ):
        if verified is None or sequence is None:
            raise ValueError("score thresholds need the verified and sequence counts")
        rows = np.flatnonzero(tested)
        scored = sc.score_proposals(
            verified=sc.counts_matrix(verified)[rows],
            sequence=sc.counts_matrix(sequence)[rows],
            weight=s.non_sequence_votes_weight,
        )
        keep = np.ones(rows.shape, dtype=bool)
        if s.tested_engagement_threshold is not None:
            keep &= scored["engagement"].lower_bound > s.tested_engagement_threshold
        alternatives = []
        if s.tested_score_threshold is not None:
            alternatives.append(scored.top_score.lower_bound >= s.tested_score_threshold)
        if s.tested_controversy_threshold is not None:
            alternatives.append(scored.controversy.lower_bound >= s.tested_controversy_threshold)
        if alternatives:
            keep &= np.logical_or.reduce(alternatives)
        tested = np.zeros(votes.shape, dtype=bool)
        tested[rows[keep]] = True
    pools[tested] = POOL_TESTED
    pools[votes < settings.new_votes_threshold] = POOL_NEW
    return pools


def controversy_slots(*, tested_slots: int, controversy_ratio: float) -> int:
    """``round_half_up(tested_slots * ratio)``, at least 1 if both are positive.

    With the defaults: 8 tested slots -> 1 controversy, 7 tops.
    """
    if tested_slots <= 0 or controversy_ratio <= 0:
        return 0
    return min(tested_slots, max(1, math.floor(tested_slots * controversy_ratio + 0.5)))


DEFAULT_SETTINGS = SequenceSettings()


def select_sequence(
    *,
    candidates: CandidatePool | Sequence[Candidate],
    voted_ids: Collection[Hashable] = (),
    included_ids: Sequence[Hashable] = (),
    settings: SequenceSettings = DEFAULT_SETTINGS,
    rng: np.random.Generator | int | None = None,
) -> list[SequenceCard]:
    """Choose the cards of one sequence request (see the module docstring).

    ``voted_ids`` are never returned (unless also included); ``included_ids``
    come first, in order. The rest is shuffled with ``rng`` (a Generator or
    a seed): the same seed and inputs give the same sequence. Each card says
    why it was chosen. Returns at most ``settings.size`` cards, fewer only
    when there are not enough unvoted candidates.
    """
    pool = (
        candidates
        if isinstance(candidates, CandidatePool)
        else CandidatePool.from_candidates(candidates)
    )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    size = settings.size
    n = len(pool)

    included = list(dict.fromkeys(included_ids))[:size]
    cards = [SequenceCard(id_, "included") for id_ in included]
    blocked = np.zeros(n, dtype=bool)
    for id_ in (*voted_ids, *included):
        i = pool.index.get(id_)
        if i is not None:
            blocked[i] = True
    included_rows = [pool.index[id_] for id_ in included if id_ in pool.index]
    used_authors = {int(pool.author_codes[i]) for i in included_rows}
    pools = pool.pools(settings)

    # New quota: oldest first, one per author.
    included_new = sum(1 for i in included_rows if pools[i] == POOL_NEW)
    needed_new = min(
        max(math.ceil(settings.new_ratio * size) - included_new, 0), size - len(included)
    )
    new_rows: list[int] = []
    if needed_new > 0:
        order = pool.oldest_first
        order = order[(pools[order] == POOL_NEW) & ~blocked[order]]
        for i in order.tolist():
            author = int(pool.author_codes[i])
            if author in used_authors:
                continue
            used_authors.add(author)
            new_rows.append(i)
            if len(new_rows) == needed_new:
                break

    # Tested quota: Thompson sampling, then de-duplication.
    needed_tested = max(size - len(new_rows) - len(included), 0)
    top_rows: list[int] = []
    controversy_rows: list[int] = []
    if needed_tested > 0:
        tested = np.flatnonzero((pools == POOL_TESTED) & ~blocked)
        if used_authors and tested.size:
            tested = tested[~np.isin(pool.author_codes[tested], list(used_authors))]
        tested = rng.permutation(tested)
        if settings.max_tested_candidates is not None:
            tested = tested[: settings.max_tested_candidates]
        if tested.size:
            scored = sc.score_proposals(
                verified=pool.verified[tested],
                sequence=pool.sequence[tested],
                weight=settings.non_sequence_votes_weight,
                rng=rng,
            )
            zone = scored.sampled_zone
            tops = tested[zone == sc.ZONE_CONSENSUS]
            tops = tops[
                np.argsort(-scored.top_score.sample[zone == sc.ZONE_CONSENSUS], kind="stable")
            ]
            contros = tested[zone == sc.ZONE_CONTROVERSY]
            contros = contros[
                np.argsort(-scored.controversy.sample[zone == sc.ZONE_CONTROVERSY], kind="stable")
            ]
            ignored = pool.ignored_keywords(tested, threshold=settings.keywords_threshold)
            blocked_keywords: set[str] = set()
            chooser = _Chooser(pool=pool, settings=settings, ignored=ignored)
            controversy_rows = chooser.choose(
                contros.tolist(),
                quota=controversy_slots(
                    tested_slots=needed_tested, controversy_ratio=settings.controversy_ratio
                ),
                blocked_authors=used_authors,
                blocked_keywords=blocked_keywords,
            )
            top_rows = chooser.choose(
                tops.tolist(),
                quota=needed_tested - len(controversy_rows),
                blocked_authors=used_authors,
                blocked_keywords=blocked_keywords,
            )

    body = (
        [SequenceCard(pool.ids[i], "new") for i in new_rows]
        + [SequenceCard(pool.ids[i], "controversy") for i in controversy_rows]
        + [SequenceCard(pool.ids[i], "top") for i in top_rows]
    )
    cards += [body[j] for j in rng.permutation(len(body)).tolist()]

    # Fallback: newest remaining candidates, whatever their pool.
    if len(cards) < size:
        for i in (*new_rows, *controversy_rows, *top_rows):
            blocked[i] = True
        order = pool.newest_first
        for i in order[~blocked[order]][: size - len(cards)].tolist():
            cards.append(SequenceCard(pool.ids[i], "fallback"))
    return cards


class _Chooser:
    """Window picking (§2.4 step 6), lazily over an already sorted list."""

    def __init__(
        self, *, pool: CandidatePool, settings: SequenceSettings, ignored: frozenset[str]
    ) -> None:
        self.pool = pool
        self.window_size = max(settings.candidates_pool_size, 1)
        self.ignored = ignored

    def choose(
        self, order: list[int], *, quota: int, blocked_authors: set[int], blocked_keywords: set[str]
    ) -> list[int]:
        """Pick up to ``quota`` rows; updates the blocked sets in place."""
        authors = self.pool.author_codes
        votes = self.pool.sequence_votes
        keywords = self.pool.keywords
        ignored = self.ignored

        def allowed(i: int) -> bool:
            return int(authors[i]) not in blocked_authors and not any(
                k in blocked_keywords and k not in ignored for k in keywords[i]
            )

        chosen: list[int] = []
        window: list[int] = []
        position = 0
        while len(chosen) < quota:
            window = [i for i in window if allowed(i)]
            while len(window) < self.window_size and position < len(order):
                i = order[position]
                position += 1
                if allowed(i):
                    window.append(i)
            if not window:
                break
            pick = min(window, key=lambda i: votes[i])  # first of the fewest-voted
            chosen.append(pick)
            blocked_authors.add(int(authors[pick]))
            blocked_keywords.update(k for k in keywords[pick] if k not in ignored)
        return chosen
