"""The same idea in two consultations: ideas matched by meaning across runs (no Django).

Two runs of one cause (two countries, two years, two questions) find their ideas apart, each in
its own consultation. Their ideas' centres live in the same space when both runs used the same
embedding model (a multilingual one matches across languages). Idea ``i`` of run A and idea
``j`` of run B are the **same idea** when they are each other's nearest idea across the two runs,
and each is closer to the other than to any other idea of its own run: the clustering kept that
nearest idea of its own run apart from it, so anything closer is not another idea. No threshold
to tune; ``min_cosine`` can add one.
"""

from __future__ import annotations

import numpy as np


def _nearest_own(x: np.ndarray) -> np.ndarray:
    """Per row, the cosine of the nearest other row (-inf for a lone row)."""
    if x.shape[0] < 2:
        return np.full(x.shape[0], -np.inf)
    own = x @ x.T
    np.fill_diagonal(own, -np.inf)
    return own.max(axis=1)


def shared_ideas(
    a: np.ndarray, b: np.ndarray, *, min_cosine: float | None = None
) -> list[tuple[int, int, float]]:
    """(row of ``a``, row of ``b``, cosine) of the ideas two runs share, by decreasing cosine.

    ``a`` and ``b`` hold the ideas' centres as unit rows of the same dimension (a zero row, an
    idea without a centre, matches nothing).
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError("the centres of both runs must be rows of the same dimension")
    if not a.shape[0] or not b.shape[0]:
        return []
    sim = a @ b.T
    best_b = sim.argmax(axis=1)
    best_a = sim.argmax(axis=0)
    near_a, near_b = _nearest_own(a), _nearest_own(b)
    nonzero_a = np.linalg.norm(a, axis=1) > 0
    nonzero_b = np.linalg.norm(b, axis=1) > 0
    pairs = []
    for i, j in enumerate(best_b.tolist()):
        cosine = float(sim[i, j])
        if (
            best_a[j] == i
            and nonzero_a[i]
            and nonzero_b[j]
            and cosine > near_a[i]
            and cosine > near_b[j]
            and (min_cosine is None or cosine >= min_cosine)
        ):
            pairs.append((i, j, cosine))
    pairs.sort(key=lambda p: (-p[2], p[0]))
    return pairs
