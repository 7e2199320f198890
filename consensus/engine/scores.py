"""Make.org-style per-proposal scores, vectorised over many proposals.

Plain numpy, no Django. The formulas follow Make.org's ``ProposalScorer`` as
described in the project's Make.org research notes (§2.1-2.2); this is our own
implementation.

Notation, for one proposal and one counter c (``verified`` = every trusted vote,
``sequence`` = votes cast inside a sequence, the "specific" counter):

- ``n_k,c`` is the count of key k (a vote key or a qualification key);
- ``N_c = n_agree + n_disagree + n_neutral`` (vote keys only; qualification
  rates are divided by ``N_c`` too);
- smoothing ``s_k`` is 0.33 for vote keys and 0.01 for qualification keys.

Per key:

- rate ``p_c(k) = min((n_k,c + s_k) / (1 + N_c), 1)``;
- point score ``score(k) = w * p_verified(k) + (1 - w) * p_sequence(k)``,
  with ``w`` = ``non_sequence_votes_weight`` (0.5 by default);
- Agresti-Coull half-width on the sequence counts:
  ``q = (N_seq * p_seq(k) + 2) / (N_seq + 4)``,
  ``conf(k) = 2 * sqrt(q * (1 - q) / (N_seq + 4))``;
- bounds ``score -/+ conf``;
- Thompson sample ``sample(k) ~ Beta(n_k,seq + s_k, N_seq - n_k,seq + 1)``.

Composites (§2.2): for sums and differences the scores add, the samples add
and ``conf = sqrt(sum conf_i^2)``; for ``min(X, Y)`` the score and the sample
are the minima and ``conf = max(conf_X, conf_Y)``.

Every array function takes counts of shape ``(n_proposals,)`` per key, or a
matrix of shape ``(n_proposals, len(KEYS))`` whose columns follow ``KEYS``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

VOTE_KEYS: tuple[str, ...] = ("agree", "disagree", "neutral")
QUALIFICATIONS: Mapping[str, tuple[str, ...]] = {
    "agree": ("like_it", "doable", "platitude_agree"),
    "disagree": ("no_way", "impossible", "platitude_disagree"),
    "neutral": ("do_not_understand", "no_opinion", "do_not_care"),
}
QUALIFICATION_KEYS: tuple[str, ...] = tuple(q for v in VOTE_KEYS for q in QUALIFICATIONS[v])
KEYS: tuple[str, ...] = VOTE_KEYS + QUALIFICATION_KEYS
KEY_INDEX: Mapping[str, int] = {key: i for i, key in enumerate(KEYS)}

VOTE_SMOOTHING = 0.33
QUALIFICATION_SMOOTHING = 0.01
SMOOTHING = np.array(
    [VOTE_SMOOTHING] * len(VOTE_KEYS) + [QUALIFICATION_SMOOTHING] * len(QUALIFICATION_KEYS)
)
DEFAULT_NON_SEQUENCE_VOTES_WEIGHT = 0.5

# Keys that the composites and the zone need; the neutral qualifications are
# scored but, by default, not sampled (sampling is the costly part).
SAMPLED_KEYS: tuple[str, ...] = (
    "agree",
    "disagree",
    "neutral",
    "like_it",
    "doable",
    "platitude_agree",
    "no_way",
    "impossible",
    "platitude_disagree",
)

COMPOSITES: tuple[str, ...] = (
    "platitude",
    "adhesion",
    "agreement",
    "greatness",
    "realistic",
    "engagement",
    "top_score",
    "controversy",
    "rejection",
)

ZONE_CONSENSUS, ZONE_REJECTION, ZONE_LIMBO, ZONE_CONTROVERSY = 0, 1, 2, 3
ZONES: tuple[str, ...] = ("consensus", "rejection", "limbo", "controversy")

CONSENSUS_AGREE = 0.6
CONSENSUS_DISAGREE_BELOW = 0.15
REJECTION_DISAGREE = 0.6
REJECTION_AGREE_BELOW = 0.15
NEUTRAL_LIMIT = 0.4

Counts = Mapping[str, ArrayLike] | np.ndarray


def counts_matrix(counts: Counts, *, n: int | None = None) -> np.ndarray:
    """Return counts as a float matrix of shape ``(n, len(KEYS))``.

    ``counts`` is either such a matrix already, or a mapping key -> array of
    shape ``(n,)`` (or a scalar). Missing keys count as zero; unknown keys
    raise ``KeyError``.
    """
    if isinstance(counts, np.ndarray):
        matrix = np.asarray(counts, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.shape[1] != len(KEYS):
            raise ValueError(f"expected {len(KEYS)} columns, got {matrix.shape[1]}")
        return matrix
    unknown = set(counts) - set(KEY_INDEX)
    if unknown:
        raise KeyError(f"unknown vote or qualification keys: {sorted(unknown)}")
    if n is None:
        sizes = {np.size(v) for v in counts.values() if np.ndim(v) > 0}
        if len(sizes) > 1:
            raise ValueError(f"count arrays have different lengths: {sorted(sizes)}")
        n = sizes.pop() if sizes else 1
    matrix = np.zeros((n, len(KEYS)), dtype=np.float64)
    for key, values in counts.items():
        matrix[:, KEY_INDEX[key]] = values
    return matrix


def smoothed_rates(counts: np.ndarray) -> np.ndarray:
    """``p(k) = min((n_k + s_k) / (1 + N), 1)`` for a ``(n, len(KEYS))`` matrix."""
    total = counts[:, : len(VOTE_KEYS)].sum(axis=1, keepdims=True)
    return np.minimum((counts + SMOOTHING) / (1.0 + total), 1.0)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Point score, 95 % half-width and optional Thompson sample, per proposal."""

    score: np.ndarray
    conf: np.ndarray
    sample: np.ndarray | None = None

    @property
    def lower_bound(self) -> np.ndarray:
        return self.score - self.conf

    @property
    def upper_bound(self) -> np.ndarray:
        return self.score + self.conf

    def _sample_with(self, other: Estimate, op) -> np.ndarray | None:
        if self.sample is None or other.sample is None:
            return None
        return op(self.sample, other.sample)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(
            score=self.score + other.score,
            conf=np.hypot(self.conf, other.conf),
            sample=self._sample_with(other, np.add),
        )

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(
            score=self.score - other.score,
            conf=np.hypot(self.conf, other.conf),
            sample=self._sample_with(other, np.subtract),
        )

    def minimum(self, other: Estimate) -> Estimate:
        """``min(X, Y)``: min of scores and of samples, max of half-widths."""
        return Estimate(
            score=np.minimum(self.score, other.score),
            conf=np.maximum(self.conf, other.conf),
            sample=self._sample_with(other, np.minimum),
        )


def key_estimates(
    *,
    verified: Counts,
    sequence: Counts,
    weight: float = DEFAULT_NON_SEQUENCE_VOTES_WEIGHT,
    rng: np.random.Generator | None = None,
    sample_keys: Collection[str] = SAMPLED_KEYS,
) -> dict[str, Estimate]:
    """Per-key estimates (§2.1) for every proposal.

    ``verified`` and ``sequence`` are the two counters (same proposals, same
    order). With ``rng``, a Beta sample is drawn for each key in
    ``sample_keys`` (other keys get ``sample=None``); without it no sample is
    drawn.
    """
    seq = counts_matrix(sequence)
    ver = counts_matrix(verified, n=seq.shape[0])
    if ver.shape != seq.shape:
        raise ValueError(f"verified {ver.shape} and sequence {seq.shape} differ")
    p_seq = smoothed_rates(seq)
    score = weight * smoothed_rates(ver) + (1.0 - weight) * p_seq
    n_seq = seq[:, : len(VOTE_KEYS)].sum(axis=1, keepdims=True)
    conf = share_half_width(p_seq, n_seq)

    samples: dict[str, np.ndarray] = {}
    if rng is not None:
        columns = [KEY_INDEX[k] for k in sample_keys]
        if columns:
            hits = seq[:, columns]
            alpha = hits + SMOOTHING[columns]
            beta = np.maximum(n_seq - hits, 0.0) + 1.0
            drawn = rng.beta(alpha, beta)
            samples = {k: drawn[:, j] for j, k in enumerate(sample_keys)}
    return {
        key: Estimate(score=score[:, i], conf=conf[:, i], sample=samples.get(key))
        for i, key in enumerate(KEYS)
    }


def share_half_width(share: ArrayLike, n: ArrayLike) -> np.ndarray:
    """The Agresti-Coull half-width of a ``share`` of ``n`` votes (``key_estimates``' ``conf``).

    For shares known only as figures (the votes an imported proposal received at the source):
    ranking by the share minus it (or plus it) keeps a share of a few votes from coming first
    (or last) on luck.
    """
    share, n = np.asarray(share, dtype=float), np.asarray(n, dtype=float)
    q = (n * share + 2.0) / (n + 4.0)
    return 2.0 * np.sqrt(q * (1.0 - q) / (n + 4.0))


def composite_estimates(keys: Mapping[str, Estimate]) -> dict[str, Estimate]:
    """Composite scores (§2.2) from per-key estimates.

    - platitude = platitude_agree + platitude_disagree
    - adhesion = agreement = agree
    - greatness = like_it - no_way; realistic = doable - impossible
    - engagement = greatness + realistic - platitude
    - top_score = agree + like_it + doable - no_way - impossible - platitude
    - controversy = min(agree, disagree) + min(like_it, no_way)
    - rejection = disagree + no_way + impossible - like_it - doable - platitude
    """
    k = keys
    platitude = k["platitude_agree"] + k["platitude_disagree"]
    greatness = k["like_it"] - k["no_way"]
    realistic = k["doable"] - k["impossible"]
    return {
        "platitude": platitude,
        "adhesion": k["agree"],
        "agreement": k["agree"],
        "greatness": greatness,
        "realistic": realistic,
        "engagement": greatness + realistic - platitude,
        "top_score": k["agree"]
        + k["like_it"]
        + k["doable"]
        - k["no_way"]
        - k["impossible"]
        - platitude,
        "controversy": k["agree"].minimum(k["disagree"]) + k["like_it"].minimum(k["no_way"]),
        "rejection": k["disagree"]
        + k["no_way"]
        + k["impossible"]
        - k["like_it"]
        - k["doable"]
        - platitude,
    }


def zones(*, agree: ArrayLike, disagree: ArrayLike, neutral: ArrayLike) -> np.ndarray:
    """Zone codes (indexes into ``ZONES``), as an int8 array.

    - consensus if a >= 0.6, or n < 0.4 and d < 0.15;
    - else rejection if d >= 0.6, or n < 0.4 and a < 0.15;
    - else limbo if n >= 0.4;
    - else controversy.
    """
    a, d, n = (np.asarray(x, dtype=np.float64) for x in (agree, disagree, neutral))
    low_neutral = n < NEUTRAL_LIMIT
    return np.select(
        [
            (a >= CONSENSUS_AGREE) | (low_neutral & (d < CONSENSUS_DISAGREE_BELOW)),
            (d >= REJECTION_DISAGREE) | (low_neutral & (a < REJECTION_AGREE_BELOW)),
            ~low_neutral,
        ],
        [ZONE_CONSENSUS, ZONE_REJECTION, ZONE_LIMBO],
        default=ZONE_CONTROVERSY,
    ).astype(np.int8)


@dataclass(frozen=True, slots=True)
class Scores:
    """All scores for ``n`` proposals.

    ``zone`` uses the point scores; ``sampled_zone`` (when sampled) uses the
    agree/disagree/neutral samples, as the sequence does.
    """

    keys: dict[str, Estimate]
    composites: dict[str, Estimate]
    zone: np.ndarray
    sampled_zone: np.ndarray | None

    def __getitem__(self, name: str) -> Estimate:
        if name in self.composites:
            return self.composites[name]
        return self.keys[name]

    @property
    def top_score(self) -> Estimate:
        return self.composites["top_score"]

    @property
    def controversy(self) -> Estimate:
        return self.composites["controversy"]


def score_proposals(
    *,
    verified: Counts,
    sequence: Counts,
    weight: float = DEFAULT_NON_SEQUENCE_VOTES_WEIGHT,
    rng: np.random.Generator | None = None,
    sample_keys: Collection[str] = SAMPLED_KEYS,
) -> Scores:
    """Score many proposals at once; draw Thompson samples when ``rng`` is given."""
    keys = key_estimates(
        verified=verified, sequence=sequence, weight=weight, rng=rng, sample_keys=sample_keys
    )
    sampled_zone = None
    if all(keys[k].sample is not None for k in VOTE_KEYS):
        sampled_zone = zones(
            agree=keys["agree"].sample,
            disagree=keys["disagree"].sample,
            neutral=keys["neutral"].sample,
        )
    return Scores(
        keys=keys,
        composites=composite_estimates(keys),
        zone=zones(
            agree=keys["agree"].score,
            disagree=keys["disagree"].score,
            neutral=keys["neutral"].score,
        ),
        sampled_zone=sampled_zone,
    )


@dataclass(frozen=True, slots=True)
class ScalarEstimate:
    score: float
    conf: float
    lower_bound: float
    upper_bound: float
    sample: float | None


@dataclass(frozen=True, slots=True)
class ProposalScore:
    """Scores of a single proposal, as plain floats (see ``score_proposal``)."""

    estimates: dict[str, ScalarEstimate]
    zone: str
    sampled_zone: str | None

    def __getitem__(self, name: str) -> ScalarEstimate:
        return self.estimates[name]


def score_proposal(
    *,
    verified: Mapping[str, int],
    sequence: Mapping[str, int],
    weight: float = DEFAULT_NON_SEQUENCE_VOTES_WEIGHT,
    rng: np.random.Generator | None = None,
) -> ProposalScore:
    """Convenience wrapper: score one proposal from key -> count mappings.

    The result maps every key of ``KEYS`` and every name of ``COMPOSITES``
    to a ``ScalarEstimate``.
    """
    scores = score_proposals(
        verified=dict(verified), sequence=dict(sequence), weight=weight, rng=rng
    )

    def scalar(e: Estimate) -> ScalarEstimate:
        return ScalarEstimate(
            score=float(e.score[0]),
            conf=float(e.conf[0]),
            lower_bound=float(e.lower_bound[0]),
            upper_bound=float(e.upper_bound[0]),
            sample=None if e.sample is None else float(e.sample[0]),
        )

    estimates = {name: scalar(e) for name, e in {**scores.keys, **scores.composites}.items()}
    return ProposalScore(
        estimates=estimates,
        zone=ZONES[int(scores.zone[0])],
        sampled_zone=None if scores.sampled_zone is None else ZONES[int(scores.sampled_zone[0])],
    )
