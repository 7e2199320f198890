"""Post-stratification by raking: weights that make the participants look like a population.

Pure numpy, no Django. Participants who said who they are (a category per dimension: age range,
gender) get a weight so that, weighted, each dimension's shares equal the population's
(iterative proportional fitting, Deming and Stephan 1940). Weights are trimmed at ``cap`` times
their mean, alternating with the fitting, so that a few participants of a rare category cannot
decide a result alone; the effective sample size (Kish) says how much the weighting costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CAP = 5.0


@dataclass
class RakeResult:
    weights: np.ndarray  # (n,), mean 1 over the weighted participants, 0 elsewhere
    weighted: np.ndarray  # bool (n,): the participants weighted (every dimension known)
    converged: bool
    iterations: int
    effective: float  # Kish's effective sample size: (sum w)^2 / sum w^2
    max_weight: float
    margins: dict[str, np.ndarray]  # weighted shares reached, per dimension


def rake(
    categories: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    *,
    cap: float = DEFAULT_CAP,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> RakeResult:
    """Weights for ``categories`` (per dimension, a category index per participant, -1 unknown)
    so that the weighted shares match ``targets`` (per dimension, shares summing to 1).

    Only participants with every dimension known are weighted. A category of the population no
    participant belongs to cannot be matched: ``ValueError`` says which. A category of
    participants with a population share of 0 gets weight 0.
    """
    if set(categories) != set(targets) or not categories:
        raise ValueError("categories and targets must name the same dimensions")
    if cap <= 1:
        raise ValueError("cap must be above 1")
    n = len(next(iter(categories.values())))
    codes = {dim: np.asarray(c, dtype=np.int64) for dim, c in categories.items()}
    shares = {dim: np.asarray(t, dtype=float) for dim, t in targets.items()}
    for dim, c in codes.items():
        t = shares[dim]
        if c.shape != (n,):
            raise ValueError(f"{dim}: one category per participant")
        if t.ndim != 1 or (t < 0).any() or not np.isclose(t.sum(), 1.0, atol=0.01):
            raise ValueError(f"{dim}: the population shares must be non-negative and sum to 1")
        if c.max(initial=-1) >= t.shape[0]:
            raise ValueError(f"{dim}: a category has no population share")
    weighted = np.logical_and.reduce([c >= 0 for c in codes.values()])
    if not weighted.any():
        raise ValueError("no participant gave every dimension")
    for dim, c in codes.items():
        present = np.bincount(c[weighted], minlength=shares[dim].shape[0]) > 0
        missing = np.flatnonzero((shares[dim] > 0) & ~present)
        if missing.size:
            raise ValueError(f"{dim}: no participant in categories {missing.tolist()}")
    shares = {dim: t / t.sum() for dim, t in shares.items()}
    w = weighted.astype(float)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported
        for dim, c in codes.items():
            margin = np.bincount(c[weighted], weights=w[weighted], minlength=shares[dim].shape[0])
            factor = np.divide(
                shares[dim] * w.sum(), margin, out=np.zeros_like(margin), where=margin > 0
            )
            w[weighted] *= factor[c[weighted]]
        for _trim in range(50):  # capped, then the mean back to 1, until none is above cap
            w /= w[weighted].mean()
            if w.max() <= cap * (1 + 1e-9):
                break
            w = np.minimum(w, cap)
        gap = max(
            np.abs(_margin(c, w, weighted, shares[dim].shape[0]) - shares[dim]).max()
            for dim, c in codes.items()
        )
        if gap < tol:
            converged = True
            break
    total = w.sum()
    return RakeResult(
        weights=w,
        weighted=weighted,
        converged=converged,
        iterations=iterations,
        effective=float(total**2 / np.square(w).sum()),
        max_weight=float(w.max()),
        margins={
            dim: _margin(c, w, weighted, shares[dim].shape[0]) for dim, c in codes.items()
        },
    )


def _margin(c: np.ndarray, w: np.ndarray, weighted: np.ndarray, k: int) -> np.ndarray:
    m = np.bincount(c[weighted], weights=w[weighted], minlength=k)
    return m / m.sum()
