"""Polis-style opinion groups on a sparse vote matrix (numpy/scipy/scikit-learn, no Django).

The algorithm follows ``/work/shared/research/polis.md`` §2 (written from the Polis math service's
behaviour; no Polis or red-dwarf code is used here):

1. votes -> participant x statement matrix, agree +1 / disagree -1 / pass 0 / missing;
2. moderated-out statements are zeroed for everybody, missing votes are imputed with the
   statement's mean, top-2 principal components of the centred matrix;
3. sparsity-aware projection, x_i = sqrt(C / n'_i) * (row_i - mu) . W;
4. participants with >= min(7, C) votes are clustered: ~100 base k-means clusters, then weighted
   k-means over the base centres for k = 2..5, k chosen by silhouette over the base centres;
5. representative statements per group (pseudocount ratios and z-tests at 90 %);
6. group-informed consensus, prod_g (A_g + 1) / (S_g + 2).

Scaling: everything works on the sparse matrix. PCA is a truncated randomized SVD of the centred
matrix, where centring only touches stored cells because imputed cells are exactly zero after
centring. Base clusters are fitted on a subsample when there are many participants and everybody
is then assigned to the nearest centre.

Vote matrix representation (``VoteMatrix``): a CSR matrix whose *stored* cells are the votes.
Values are +1 (agree), -1 (disagree) and 0 (pass); passes are stored as explicit zeros, so never
call ``eliminate_zeros()`` on it. Build it with ``VoteMatrix.from_triples`` (which de-duplicates and
keeps the last vote per cell) rather than by hand.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

AGREE = 1
DISAGREE = -1
PASS = 0

Z_90 = 1.2816  # one-sided 90 %, the significance level Polis uses for repness and majority
Z_95 = 1.6449

MIN_VOTES = 7  # Polis: a participant is clustered with >= min(7, C) votes
MIN_CLUSTERED = 15  # Polis fills up to 15 clustered participants with the most active others
BASE_CLUSTERS = 100
MAX_GROUPS = 5
BASE_FIT_SAMPLE = 20_000  # above this many clustered participants, fit base k-means on a sample
K_SMOOTHING_RUNS = 4  # a new best k must win this many consecutive runs before it is published


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteMatrix:
    """Participants x statements votes. Stored cells are the votes; see the module docstring."""

    votes: sp.csr_matrix  # float64, data in {+1, -1, 0}; explicit zeros are passes

    @classmethod
    def from_triples(
        cls,
        participant: np.ndarray,
        statement: np.ndarray,
        value: np.ndarray,
        *,
        n_participants: int,
        n_statements: int,
    ) -> VoteMatrix:
        """Build from parallel arrays of row index, column index and vote (+1/-1/0).

        When a (participant, statement) pair repeats, the last one in array order wins, so pass the
        votes sorted by time. Raises ValueError on out-of-range indices or values.
        """
        participant = np.asarray(participant, dtype=np.int64).ravel()
        statement = np.asarray(statement, dtype=np.int64).ravel()
        value = np.asarray(value).ravel()
        if not (len(participant) == len(statement) == len(value)):
            raise ValueError("participant, statement and value must have the same length")
        if n_participants < 0 or n_statements < 0:
            raise ValueError("matrix dimensions must be >= 0")
        if len(value):
            if participant.min() < 0 or participant.max() >= n_participants:
                raise ValueError("participant index out of range")
            if statement.min() < 0 or statement.max() >= n_statements:
                raise ValueError("statement index out of range")
            if not np.isin(value, (-1, 0, 1)).all():
                raise ValueError("vote values must be +1 (agree), -1 (disagree) or 0 (pass)")
        key = participant * max(n_statements, 1) + statement
        # keep the last occurrence of each key: unique on the reversed array keeps the first
        rev_key = key[::-1]
        _, first_in_rev = np.unique(rev_key, return_index=True)
        keep = len(key) - 1 - first_in_rev  # sorted by key, i.e. by (row, col)
        rows, cols = participant[keep], statement[keep]
        data = value[keep].astype(np.float64)
        indptr = np.zeros(n_participants + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(rows, minlength=n_participants))
        mat = sp.csr_matrix(
            (data, cols.astype(np.int32), indptr), shape=(n_participants, n_statements)
        )
        return cls(mat)

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> VoteMatrix:
        """From a float array with NaN for "not voted" (handy in tests)."""
        dense = np.asarray(dense, dtype=np.float64)
        if dense.ndim != 2:
            raise ValueError("expected a 2-D array")
        rows, cols = np.nonzero(~np.isnan(dense))
        return cls.from_triples(
            rows,
            cols,
            dense[rows, cols],
            n_participants=dense.shape[0],
            n_statements=dense.shape[1],
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.votes.shape

    @property
    def n_votes(self) -> int:
        return int(self.votes.nnz)

    def _indicator(self, data: np.ndarray) -> sp.csr_matrix:
        m = self.votes
        return sp.csr_matrix((data, m.indices, m.indptr), shape=m.shape)

    def seen(self) -> sp.csr_matrix:
        """1.0 on every voted cell (passes included)."""
        return self._indicator(np.ones_like(self.votes.data))

    def agrees(self) -> sp.csr_matrix:
        return self._indicator((self.votes.data == AGREE).astype(np.float64))

    def disagrees(self) -> sp.csr_matrix:
        return self._indicator((self.votes.data == DISAGREE).astype(np.float64))

    def votes_per_participant(self) -> np.ndarray:
        return np.diff(self.votes.indptr)


def _moderated_mask(moderated_out, n_statements: int) -> np.ndarray:
    mask = np.zeros(n_statements, dtype=bool)
    if moderated_out is None:
        return mask
    arr = np.asarray(moderated_out)
    if arr.dtype == bool:
        if arr.shape != (n_statements,):
            raise ValueError("moderated_out boolean mask must have one entry per statement")
        return arr.copy()
    if arr.size:
        mask[arr.astype(np.int64)] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Participants who are clustered
# ---------------------------------------------------------------------------------------------


def in_conv_mask(
    votes_per_participant: np.ndarray,
    n_statements: int,
    *,
    min_votes: int = MIN_VOTES,
    min_clustered: int = MIN_CLUSTERED,
    previously_in: np.ndarray | None = None,
) -> np.ndarray:
    """Polis's "in-conv" rule (spec §2.2).

    In if n_i >= min(min_votes, C); sticky (``previously_in`` stays in); if fewer than
    ``min_clustered`` qualify, the most active others (with at least one vote) are added.
    """
    n = np.asarray(votes_per_participant)
    threshold = max(1, min(min_votes, n_statements))
    mask = n >= threshold
    if previously_in is not None:
        mask |= previously_in.astype(bool)
    missing = min_clustered - int(mask.sum())
    if missing > 0:
        candidates = np.flatnonzero(~mask & (n > 0))
        # most active first; ties by index so the result is deterministic
        order = candidates[np.lexsort((candidates, -n[candidates]))]
        mask[order[:missing]] = True
    return mask


# ---------------------------------------------------------------------------------------------
# PCA and projection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCAResult:
    center: np.ndarray  # (C,) column means of the voted cells of R' (0 for moderated-out)
    components: np.ndarray  # (n_components, C), unit rows
    explained_variance: np.ndarray  # (n_components,) per participant
    explained_variance_ratio: np.ndarray


def _centred(vm: VoteMatrix, moderated: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse centred mean-imputed matrix X (imputed cells are exactly 0) and the centre mu."""
    m = vm.votes
    n_rows, n_cols = m.shape
    counts = np.bincount(m.indices, minlength=n_cols).astype(np.float64)
    sums = np.bincount(m.indices, weights=m.data, minlength=n_cols)
    mu = np.divide(sums, counts, out=np.zeros(n_cols), where=counts > 0)
    mu[moderated] = 0.0
    data = m.data - mu[m.indices]
    data[moderated[m.indices]] = 0.0  # moderated-out columns are constant 0 for everybody
    x = sp.csr_matrix((data, m.indices, m.indptr), shape=m.shape)
    return x, mu


def _total_variance(x: sp.csr_matrix) -> float:
    return float(np.dot(x.data, x.data))


def pca(
    vm: VoteMatrix,
    *,
    moderated_out=None,
    n_components: int = 2,
    seed: int = 0,
    previous_components: np.ndarray | None = None,
    n_iter: int = 6,
) -> PCAResult:
    """Top principal components of the mean-imputed matrix R' (spec §2.3), without densifying.

    Randomized subspace iteration on the sparse centred matrix. Signs are aligned with
    ``previous_components`` when given, else fixed so each component's largest loading is positive.
    """
    n_rows, n_cols = vm.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError("PCA needs at least one participant and one statement")
    moderated = _moderated_mask(moderated_out, n_cols)
    x, mu = _centred(vm, moderated)
    k = min(n_components, n_cols)
    total = _total_variance(x)
    comps = np.zeros((n_components, n_cols))
    var = np.zeros(n_components)
    if total > 0 and k > 0:
        comps_k, var_k = _randomized_top_eigvecs(
            x, k, seed=seed, n_iter=n_iter, warm=previous_components
        )
        comps[:k] = comps_k
        var[:k] = var_k
    if previous_components is not None and previous_components.shape == comps.shape:
        signs = np.sign(np.sum(comps * previous_components, axis=1))
    else:
        idx = np.argmax(np.abs(comps), axis=1)
        signs = np.sign(comps[np.arange(n_components), idx])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    ratio = var / total if total > 0 else np.zeros(n_components)
    return PCAResult(
        center=mu,
        components=comps,
        explained_variance=var / max(n_rows - 1, 1),
        explained_variance_ratio=ratio,
    )


def _randomized_top_eigvecs(
    x: sp.csr_matrix, k: int, *, seed: int, n_iter: int, warm: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k right singular vectors of sparse x by randomized subspace iteration on X^T X.

    Works in statement space (C x l blocks), so memory is O(nnz + C*l) plus two N x l products.
    """
    n_cols = x.shape[1]
    rng = np.random.default_rng(seed)
    block = min(n_cols, k + 10)
    q = rng.standard_normal((n_cols, block))
    if warm is not None and warm.shape[1] == n_cols:
        q[:, : warm.shape[0]] = warm.T
    xt = x.T.tocsr()
    q, _ = np.linalg.qr(q)
    for _ in range(n_iter):
        q, _ = np.linalg.qr(xt @ (x @ q))
    # Rayleigh-Ritz on the subspace
    b = x @ q  # N x block
    small = b.T @ b
    evals, evecs = np.linalg.eigh(small)
    order = np.argsort(evals)[::-1][:k]
    vecs = (q @ evecs[:, order]).T
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs, np.maximum(evals[order], 0.0)


def project(vm: VoteMatrix, pca_result: PCAResult, *, moderated_out=None) -> np.ndarray:
    """Sparsity-aware positions x_i = sqrt(C / max(n'_i, 1)) * (R'_i - mu) . W (spec §2.3.5)."""
    n_rows, n_cols = vm.shape
    moderated = _moderated_mask(moderated_out, n_cols)
    x, _ = _centred_with(vm, moderated, pca_result.center)
    raw = x @ pca_result.components.T
    # n'_i: votes on kept statements plus every moderated-out column (zeroed for everybody)
    m = vm.votes
    kept_votes = np.bincount(
        np.repeat(np.arange(n_rows), np.diff(m.indptr)),
        weights=(~moderated[m.indices]).astype(float),
        minlength=n_rows,
    )
    n_prime = kept_votes + moderated.sum()
    scale = np.sqrt(n_cols / np.maximum(n_prime, 1.0))
    return raw * scale[:, None]


def _centred_with(vm: VoteMatrix, moderated: np.ndarray, mu: np.ndarray):
    m = vm.votes
    data = m.data - mu[m.indices]
    data[moderated[m.indices]] = 0.0
    return sp.csr_matrix((data, m.indices, m.indptr), shape=m.shape), mu


def statement_extremity(pca_result: PCAResult) -> np.ndarray:
    """e_j = ||sqrt(C) * (1 - mu_j) * W_j||, for routing and the map (spec §2.3.6)."""
    n_cols = pca_result.center.shape[0]
    y = math.sqrt(n_cols) * (AGREE - pca_result.center)[None, :] * pca_result.components
    return np.linalg.norm(y, axis=0)


# ---------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------


def _kmeans(points, k, *, seed, weights=None, init=None, max_iter=100, n_init=3):
    from sklearn.cluster import KMeans

    if init is not None:
        km = KMeans(
            n_clusters=len(init),
            init=init,
            n_init=1,
            max_iter=max_iter,
            tol=1e-6,
            random_state=seed,
        )
    else:
        km = KMeans(
            n_clusters=k,
            init="k-means++",
            n_init=n_init,
            max_iter=max_iter,
            tol=1e-6,
            random_state=seed,
        )
    km.fit(points, sample_weight=weights)
    return km.cluster_centers_, km.labels_


def _nearest(points: np.ndarray, centres: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    out = np.empty(len(points), dtype=np.int64)
    c2 = np.sum(centres**2, axis=1)
    for lo in range(0, len(points), chunk):
        p = points[lo : lo + chunk]
        d = c2[None, :] - 2.0 * p @ centres.T
        out[lo : lo + chunk] = np.argmin(d, axis=1)
    return out


def base_clusters(
    positions: np.ndarray,
    *,
    n_clusters: int = BASE_CLUSTERS,
    seed: int = 0,
    previous_centres: np.ndarray | None = None,
    fit_sample: int = BASE_FIT_SAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means with ~100 centres on the clustered participants' 2-D positions (spec §2.4.1).

    Returns (centres (B, 2), label per point). Empty clusters are dropped, so B <= n_clusters and
    B <= number of distinct points. Above ``fit_sample`` points the centres are fitted on a seeded
    random sample, then everybody is assigned and the centres are recomputed as member means.
    """
    n = len(positions)
    if n == 0:
        return np.zeros((0, positions.shape[1])), np.zeros(0, dtype=np.int64)
    distinct = np.unique(np.round(positions, 12), axis=0)
    k = min(n_clusters, len(distinct))
    if k == 1:
        return positions.mean(axis=0, keepdims=True), np.zeros(n, dtype=np.int64)
    # k-means++ picks its seeds by row index: fit on the points in a canonical order (by
    # position), so that the groups do not depend on the order the participants were loaded in.
    canonical = positions[np.lexsort(positions.T[::-1])]
    rng = np.random.default_rng(seed)
    fit_pts = (
        canonical
        if n <= fit_sample
        else canonical[np.sort(rng.choice(n, fit_sample, replace=False))]
    )
    init = None
    if previous_centres is not None and len(previous_centres) > 0:
        init = _warm_init(previous_centres, fit_pts, k)
    centres, _ = _kmeans(fit_pts, k, seed=seed, init=init)
    labels = _nearest(positions, centres)
    counts = np.bincount(labels, minlength=len(centres))
    keep = np.flatnonzero(counts > 0)
    remap = np.full(len(centres), -1)
    remap[keep] = np.arange(len(keep))
    labels = remap[labels]
    sums = np.zeros((len(keep), positions.shape[1]))
    for d in range(positions.shape[1]):
        sums[:, d] = np.bincount(labels, weights=positions[:, d], minlength=len(keep))
    centres = sums / counts[keep][:, None]
    return centres, labels


def _warm_init(previous: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """Previous centres (deduplicated), then farthest points added until there are k (Polis-like)."""
    init = np.unique(np.round(previous, 12), axis=0)[:k]
    while len(init) < k:
        d = _min_dist(points, init)
        j = int(np.argmax(d))
        if d[j] <= 0:
            break
        init = np.vstack([init, points[j]])
    return init


def _min_dist(points, centres):
    idx = _nearest(points, centres)
    return ((points - centres[idx]) ** 2).sum(1)


def _silhouette_on_centres(centres: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette over base centres, unweighted; s = 0 for a base cluster alone in its group."""
    from sklearn.metrics import silhouette_samples

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(centres):
        return -1.0
    return float(np.mean(silhouette_samples(centres, labels)))


def _lloyd(points, weights, centres, max_iter=300):
    """Weighted Lloyd iterations; tiny inputs (<= a few hundred points), plain numpy."""
    for _ in range(max_iter):
        d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        labels = np.argmin(d, axis=1)
        w = np.bincount(labels, weights=weights, minlength=len(centres))
        new = np.stack(
            [
                np.bincount(labels, weights=weights * points[:, i], minlength=len(centres))
                for i in range(points.shape[1])
            ],
            axis=1,
        )
        nonempty = w > 0
        new[nonempty] /= w[nonempty, None]
        new[~nonempty] = centres[~nonempty]
        if np.allclose(new, centres, atol=1e-9, rtol=0):
            centres = new
            break
        centres = new
    d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    labels = np.argmin(d, axis=1)
    inertia = float((weights * d[np.arange(len(points)), labels]).sum())
    return centres, labels, inertia


def _kmeanspp(points, weights, k, rng):
    centres = [points[rng.choice(len(points), p=weights / weights.sum())]]
    for _ in range(1, k):
        d = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1) * weights
        if d.sum() <= 0:
            break
        centres.append(points[rng.choice(len(points), p=d / d.sum())])
    return np.array(centres)


def group_clusters(
    base_centres: np.ndarray,
    base_sizes: np.ndarray,
    *,
    max_groups: int = MAX_GROUPS,
    seed: int = 0,
    previous_group_centres: dict[int, np.ndarray] | None = None,
    min_group_size: float = 1,
    n_init: int = 20,
) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Weighted k-means over the base centres for each k in 2..K_max (spec §2.4.2-3).

    Returns {k: (group centres (k, 2), group label per base centre, silhouette on base centres)}.
    K_max = min(max_groups, 2 + B // 12), and k < number of base centres. For each k the lowest
    inertia of ``n_init`` k-means++ restarts (plus the previous run's centres, if given) wins, among
    the solutions whose every group holds >= ``min_group_size`` participants; a k without such a
    solution is left out. Many restarts are cheap on <= 100 points and make the result seed-proof.
    """
    n_base = len(base_centres)
    k_max = min(max_groups, 2 + n_base // 12, n_base - 1)
    rng = np.random.default_rng(seed)
    w = np.asarray(base_sizes, dtype=float)
    out = {}
    for k in range(2, k_max + 1):
        starts = [_kmeanspp(base_centres, w, k, rng) for _ in range(n_init)]
        if previous_group_centres and k in previous_group_centres:
            starts.insert(0, np.asarray(previous_group_centres[k], dtype=float))
        best = None
        for init in starts:
            if len(init) != k:
                continue
            centres, labels, inertia = _lloyd(base_centres, w, init.copy())
            sizes = np.bincount(labels, weights=w, minlength=k)
            if (sizes < max(min_group_size, 1e-9)).any():
                continue
            if best is None or inertia < best[2] - 1e-9:
                best = (centres, labels, inertia)
        if best is not None:
            out[k] = (best[0], best[1], _silhouette_on_centres(base_centres, best[1]))
    return out


def _stable_labels(
    centres: np.ndarray,
    sizes: np.ndarray,
    previous: np.ndarray | None,
    previous_ids: np.ndarray | None,
) -> np.ndarray:
    """Id for each new group: Hungarian match to previous centres, else by decreasing size."""
    k = len(centres)
    if previous is None or len(previous) == 0:
        order = np.lexsort((centres[:, 1], centres[:, 0], -sizes))
        ids = np.empty(k, dtype=np.int64)
        ids[order] = np.arange(k)
        return ids
    prev_ids = np.arange(len(previous)) if previous_ids is None else np.asarray(previous_ids)
    cost = ((centres[:, None, :] - previous[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    ids = np.full(k, -1, dtype=np.int64)
    ids[rows] = prev_ids[cols]
    free = (i for i in range(k + len(previous)) if i not in set(ids.tolist()))
    for i in np.flatnonzero(ids < 0)[np.argsort(-sizes[ids < 0], kind="stable")]:
        ids[i] = next(free)
    return ids


# ---------------------------------------------------------------------------------------------
# Group statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupCounts:
    """Per-group vote counts on the raw matrix (spec §2.5); rows follow ``group_ids``."""

    group_ids: np.ndarray  # (G,)
    agree: np.ndarray  # (G, C)
    disagree: np.ndarray  # (G, C)
    seen: np.ndarray  # (G, C) votes of any kind, passes included


def group_vote_counts(vm: VoteMatrix, labels: np.ndarray) -> GroupCounts:
    """A, D, S per group and statement. ``labels`` is one group id per participant, -1 = unclustered."""
    labels = np.asarray(labels)
    if labels.shape != (vm.shape[0],):
        raise ValueError("labels must have one entry per participant")
    group_ids = np.unique(labels[labels >= 0])
    rows = np.flatnonzero(labels >= 0)
    col = np.searchsorted(group_ids, labels[rows])
    onehot = sp.csr_matrix((np.ones(len(rows)), (col, rows)), shape=(len(group_ids), vm.shape[0]))
    return GroupCounts(
        group_ids=group_ids,
        agree=np.asarray((onehot @ vm.agrees()).todense()),
        disagree=np.asarray((onehot @ vm.disagrees()).todense()),
        seen=np.asarray((onehot @ vm.seen()).todense()),
    )


def group_informed_consensus(counts: GroupCounts, *, side: str = "agree") -> np.ndarray:
    """GIC_j = prod_g (A_gj + 1) / (S_gj + 2) (spec §2.7); ``side="disagree"`` uses D."""
    num = counts.agree if side == "agree" else counts.disagree
    if len(counts.group_ids) == 0:
        return np.full(counts.agree.shape[1], np.nan)
    return np.prod((num + 1.0) / (counts.seen + 2.0), axis=0)


def gic_geometric_mean(gic: np.ndarray, n_groups: int) -> np.ndarray:
    """GIC^(1/k): comparable across conversations with different numbers of groups."""
    return gic ** (1.0 / max(n_groups, 1))


@dataclass(frozen=True)
class RepStatement:
    statement: int  # column index
    direction: str  # "agree" or "disagree"
    n_success: int  # in-group votes on the chosen side (A or D)
    n_seen: int  # in-group votes of any kind (S)
    p: float  # (n + 1) / (S + 2)
    z_p: float
    ratio: float  # r, p over out-group p
    z_ratio: float
    metric: float  # r * z_r * p * z_p
    best_agree: bool = False


def _z_one(succ, n):
    return 2.0 * np.sqrt(n + 1.0) * ((succ + 1.0) / (n + 1.0) - 0.5)


def _z_two(s1, n1, s2, n2):
    p1 = (s1 + 1.0) / (n1 + 1.0)
    p2 = (s2 + 1.0) / (n2 + 1.0)
    ph = (s1 + s2 + 2.0) / (n1 + n2 + 2.0)
    denom = np.sqrt(np.maximum(ph * (1.0 - ph), 0.0) * (1.0 / (n1 + 1.0) + 1.0 / (n2 + 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / denom
    return np.where((ph >= 1.0) | (denom == 0), 0.0, z)


def repness_stats(counts: GroupCounts) -> dict[str, np.ndarray]:
    """All per-(group, statement) repness statistics of spec §2.6, arrays of shape (G, C)."""
    a, d, s = counts.agree, counts.disagree, counts.seen
    a_out = a.sum(0, keepdims=True) - a
    d_out = d.sum(0, keepdims=True) - d
    s_out = s.sum(0, keepdims=True) - s
    out = {}
    for side, x, x_out in (("a", a, a_out), ("d", d, d_out)):
        p = (x + 1.0) / (s + 2.0)
        out[f"p{side}"] = p
        out[f"p{side}_z"] = _z_one(x, s)
        out[f"r{side}"] = p / ((x_out + 1.0) / (s_out + 2.0))
        out[f"r{side}_z"] = _z_two(x, s, x_out, s_out)
    out["na"], out["nd"], out["ns"] = a, d, s
    return out


def representative_statements(
    counts: GroupCounts, *, moderated_out=None, max_per_group: int = 5, polis_strict: bool = False
) -> dict[int, list[RepStatement]]:
    """Polis's selection per group (spec §2.6), keyed by group id.

    Differs from Polis on two points: the "best agree" statement is always reported on its agree
    side, never as a disagree item with a tiny p (spec §2.6 quirk); and unless ``polis_strict``,
    a "best agree" candidate must be agreed with more inside the group than outside (r > 1), so a
    statement that everybody agrees with is not shown as representative of one group.
    """
    st = repness_stats(counts)
    n_cols = counts.agree.shape[1]
    moderated = _moderated_mask(moderated_out, n_cols)
    result: dict[int, list[RepStatement]] = {}
    for gi, gid in enumerate(counts.group_ids):
        g = {key: val[gi] for key, val in st.items()}
        metric_a = g["ra"] * g["ra_z"] * g["pa"] * g["pa_z"]
        metric_d = g["rd"] * g["rd_z"] * g["pd"] * g["pd_z"]
        suff_a = (g["ra_z"] > Z_90) & (g["pa_z"] > Z_90)
        suff_d = (g["rd_z"] > Z_90) & (g["pd_z"] > Z_90)
        sufficient = (suff_a | suff_d) & ~moderated
        best_agree = None
        eligible = ~moderated & ((g["na"] + g["nd"]) > 0)
        if not polis_strict:
            eligible &= g["ra"] > 1
        for j in np.flatnonzero(eligible):
            if best_agree is None:
                if g["pa_z"][j] > Z_90 or (g["ra"][j] > 1 and g["pa"][j] > 0.5):
                    best_agree = j
            elif g["ra"][best_agree] > 1:
                if metric_a[j] > metric_a[best_agree]:
                    best_agree = j
            elif g["pa"][j] * g["pa_z"][j] > g["pa"][best_agree] * g["pa_z"][best_agree]:
                best_agree = j

        def item(j, direction, is_best=False, g=g, metric_a=metric_a, metric_d=metric_d):
            s = "a" if direction == "agree" else "d"
            return RepStatement(
                statement=int(j),
                direction=direction,
                n_success=int(g[f"n{s}"][j]),
                n_seen=int(g["ns"][j]),
                p=float(g[f"p{s}"][j]),
                z_p=float(g[f"p{s}_z"][j]),
                ratio=float(g[f"r{s}"][j]),
                z_ratio=float(g[f"r{s}_z"][j]),
                metric=float(metric_a[j] if s == "a" else metric_d[j]),
                best_agree=is_best,
            )

        def direction_of(j, g=g):
            return "agree" if g["ra_z"][j] > g["rd_z"][j] else "disagree"

        if not sufficient.any():
            if best_agree is not None:
                result[int(gid)] = [item(best_agree, "agree", True)]
            else:
                cand = np.flatnonzero(~moderated)
                if len(cand) == 0:
                    result[int(gid)] = []
                else:
                    zmax = np.maximum(g["ra_z"][cand], g["rd_z"][cand])
                    j = int(cand[np.argmax(zmax)])
                    keep = polis_strict or zmax.max() > 0
                    result[int(gid)] = [item(j, direction_of(j))] if keep else []
            continue
        chosen = [j for j in np.flatnonzero(sufficient) if j != best_agree]
        items = [item(j, direction_of(j)) for j in chosen]
        items.sort(key=lambda r: -r.metric)
        if best_agree is not None:
            items.insert(0, item(best_agree, "agree", True))
        items = items[:max_per_group]
        items = [r for r in items if r.direction == "agree"] + [
            r for r in items if r.direction == "disagree"
        ]
        result[int(gid)] = items
    return result


def majority_statements(
    vm: VoteMatrix, *, moderated_out=None, max_items: int = 5
) -> dict[str, list[int]]:
    """Population-wide "majority" block (Polis calls it consensus, spec §2.7): p > 0.5, z_p > 1.2816."""
    n_cols = vm.shape[1]
    moderated = _moderated_mask(moderated_out, n_cols)
    a = np.asarray(vm.agrees().sum(0)).ravel()
    d = np.asarray(vm.disagrees().sum(0)).ravel()
    s = np.asarray(vm.seen().sum(0)).ravel()
    out = {}
    for side, x in (("agree", a), ("disagree", d)):
        p = (x + 1.0) / (s + 2.0)
        z = _z_one(x, s)
        ok = np.flatnonzero((p > 0.5) & (z > Z_90) & ~moderated)
        out[side] = [int(j) for j in ok[np.argsort(-(p * z)[ok], kind="stable")][:max_items]]
    return out


# ---------------------------------------------------------------------------------------------
# Whole pipeline
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpinionState:
    """What a run hands to the next one for warm starts and stable ids (JSON-friendly via asdict)."""

    components: np.ndarray
    base_centres: np.ndarray
    group_centres: np.ndarray  # (k, 2) in group-id order given by group_ids
    group_ids: np.ndarray
    k_centres: dict[int, np.ndarray] = field(default_factory=dict)  # warm start per k
    k: int = 0
    k_candidate: int = 0
    k_candidate_runs: int = 0
    in_conv_participant_ids: np.ndarray | None = None


@dataclass(frozen=True)
class OpinionResult:
    pca: PCAResult
    positions: np.ndarray  # (N, 2) everybody
    in_conv: np.ndarray  # (N,) bool, clustered participants
    base_labels: np.ndarray  # (N,) base cluster per participant, -1 if not clustered
    base_centres: np.ndarray
    labels: np.ndarray  # (N,) group id per participant, -1 if not clustered
    group_ids: np.ndarray  # sorted group ids
    group_centres: np.ndarray  # (G, 2) following group_ids
    silhouettes: dict[int, float]
    counts: GroupCounts
    gic: np.ndarray  # (C,)
    gic_disagree: np.ndarray
    repness: dict[int, list[RepStatement]]
    majority: dict[str, list[int]]
    state: OpinionState


def compute_opinion_groups(
    vm: VoteMatrix,
    *,
    moderated_out=None,
    seed: int = 0,
    previous: OpinionState | None = None,
    participant_ids: np.ndarray | None = None,
    min_votes: int = MIN_VOTES,
    max_groups: int = MAX_GROUPS,
    n_base_clusters: int = BASE_CLUSTERS,
    min_group_size: int | None = None,
    smooth_k: bool = True,
) -> OpinionResult:
    """Run the whole Polis pipeline (spec §2.2-2.7) on a vote matrix.

    ``previous`` (the ``state`` of the last run) warm-starts PCA and k-means, keeps in-conv
    membership sticky (needs ``participant_ids``), smooths k and keeps group ids stable by matching
    group centres with the Hungarian algorithm. Deterministic for a given seed.
    Raises ValueError when there are no participants, no statements or no votes at all.
    """
    n_rows, n_cols = vm.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError("need at least one participant and one statement")
    if vm.n_votes == 0:
        raise ValueError("no votes: nothing to compute")
    moderated = _moderated_mask(moderated_out, n_cols)

    prev_comps = previous.components if previous is not None else None
    pca_res = pca(vm, moderated_out=moderated, seed=seed, previous_components=prev_comps)
    positions = project(vm, pca_res, moderated_out=moderated)

    previously_in = None
    if (
        previous is not None
        and previous.in_conv_participant_ids is not None
        and participant_ids is not None
    ):
        previously_in = np.isin(participant_ids, previous.in_conv_participant_ids)
    in_conv = in_conv_mask(
        vm.votes_per_participant(), n_cols, min_votes=min_votes, previously_in=previously_in
    )
    idx = np.flatnonzero(in_conv)
    pts = positions[idx]

    base_centres, base_lab = base_clusters(
        pts,
        n_clusters=n_base_clusters,
        seed=seed,
        previous_centres=previous.base_centres if previous is not None else None,
    )
    base_sizes = np.bincount(base_lab, minlength=len(base_centres)).astype(float)
    if min_group_size is None:
        min_group_size = max(2, math.ceil(0.01 * len(idx)))
    prev_k_centres = previous.k_centres if previous is not None else None
    candidates = group_clusters(
        base_centres,
        base_sizes,
        max_groups=max_groups,
        seed=seed,
        previous_group_centres=prev_k_centres,
        min_group_size=min_group_size,
    )
    if not candidates:
        candidates = group_clusters(
            base_centres,
            base_sizes,
            max_groups=max_groups,
            seed=seed,
            previous_group_centres=prev_k_centres,
        )
    silhouettes = {k: v[2] for k, v in candidates.items()}

    k_cand, k_runs = 0, 0
    if candidates:
        best_k = max(candidates, key=lambda k: (candidates[k][2], -k))
        k = best_k
        if smooth_k and previous is not None and previous.k in candidates and best_k != previous.k:
            k_runs = previous.k_candidate_runs + 1 if previous.k_candidate == best_k else 1
            k_cand = best_k
            k = best_k if k_runs >= K_SMOOTHING_RUNS else previous.k
        g_centres, g_of_base, _ = candidates[k]
    else:
        # one or two distinct base centres: a single group, or one group per distinct position
        k = len(base_centres)
        if k == 2:
            g_centres, g_of_base = base_centres.copy(), np.arange(2)
        else:
            k = 1
            g_centres = (base_centres * base_sizes[:, None]).sum(0, keepdims=True) / max(
                base_sizes.sum(), 1
            )
            g_of_base = np.zeros(len(base_centres), dtype=np.int64)

    g_sizes = np.bincount(g_of_base, weights=base_sizes, minlength=k)
    ids = _stable_labels(
        g_centres,
        g_sizes,
        previous.group_centres if previous is not None else None,
        previous.group_ids if previous is not None else None,
    )
    labels = np.full(n_rows, -1, dtype=np.int64)
    labels[idx] = ids[g_of_base[base_lab]] if len(idx) else labels[idx]
    base_labels = np.full(n_rows, -1, dtype=np.int64)
    base_labels[idx] = base_lab
    order = np.argsort(ids)
    group_ids, group_centres = ids[order], g_centres[order]

    counts = group_vote_counts(vm, labels)
    gic = group_informed_consensus(counts)
    gic_d = group_informed_consensus(counts, side="disagree")
    rep = representative_statements(counts, moderated_out=moderated)
    maj = majority_statements(vm, moderated_out=moderated)

    state = OpinionState(
        components=pca_res.components,
        base_centres=base_centres,
        group_centres=group_centres,
        group_ids=group_ids,
        k_centres={kk: v[0] for kk, v in candidates.items()},
        k=k,
        k_candidate=k_cand,
        k_candidate_runs=k_runs,
        in_conv_participant_ids=None
        if participant_ids is None
        else np.asarray(participant_ids)[in_conv],
    )
    return OpinionResult(
        pca=pca_res,
        positions=positions,
        in_conv=in_conv,
        base_labels=base_labels,
        base_centres=base_centres,
        labels=labels,
        group_ids=group_ids,
        group_centres=group_centres,
        silhouettes=silhouettes,
        counts=counts,
        gic=gic,
        gic_disagree=gic_d,
        repness=rep,
        majority=maj,
        state=state,
    )


# ---------------------------------------------------------------------------------------------
# Polis open-data loader
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolisExport:
    """One conversation of ``compdemocracy/openData`` (see /work/shared/data/polis/README.md)."""

    matrix: VoteMatrix
    participant_ids: np.ndarray  # row -> Polis participant id
    statement_ids: np.ndarray  # column -> Polis comment id (tid)
    moderated_out: np.ndarray  # bool per column: moderated == -1 or is-meta
    texts: list[str]
    exported_group: np.ndarray  # per row: Polis's group-id at export, -1 if not grouped
    exported_gic: np.ndarray | None  # per column, only in the newer export format
    exported_agrees: np.ndarray  # per column: comments.csv running totals (not the votes!)
    exported_disagrees: np.ndarray
    exported_participant_counts: dict[str, np.ndarray]  # n-votes, n-agree, n-disagree per row
    source: str  # "votes.csv" or "participants-votes.csv"


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def load_polis_export(folder: str | Path) -> PolisExport:
    """Read comments.csv, participants-votes.csv and (if present) votes.csv of one conversation.

    Votes come from votes.csv, latest per (voter, comment) by timestamp, where it exists, else from
    the participants-votes.csv matrix (identical content, spec §1). Statements are every comment
    id in comments.csv or in the votes; participants every voter or matrix row. ``exported_gic``
    is Polis's own ``group-informed-consensus`` column where the export has one (bg2050).
    """
    folder = Path(folder)
    c_head, c_rows = _read_csv(folder / "comments.csv")
    ci = {name: i for i, name in enumerate(c_head)}
    p_head, p_rows = _read_csv(folder / "participants-votes.csv")
    pi = {name: i for i, name in enumerate(p_head)}
    first_vote_col = pi["n-disagree"] + 1
    matrix_tids = np.array([int(x) for x in p_head[first_vote_col:]], dtype=np.int64)

    votes_path = folder / "votes.csv"
    if votes_path.exists():
        ts, tid, pid, val = _load_votes_csv(votes_path)
        order = np.argsort(ts, kind="stable")
        tid, pid, val = tid[order], pid[order], val[order]
        source = "votes.csv"
    else:
        pids, tids, vals = [], [], []
        for row in p_rows:
            for t, cell in zip(matrix_tids, row[first_vote_col:], strict=False):
                if cell != "":
                    pids.append(int(row[pi["participant"]]))
                    tids.append(int(t))
                    vals.append(int(cell))
        pid, tid, val = np.array(pids, np.int64), np.array(tids, np.int64), np.array(vals, np.int64)
        source = "participants-votes.csv"

    comment_tids = np.array([int(r[ci["comment-id"]]) for r in c_rows], dtype=np.int64)
    statement_ids = np.unique(np.concatenate([comment_tids, tid, matrix_tids]))
    matrix_pids = np.array([int(r[pi["participant"]]) for r in p_rows], dtype=np.int64)
    participant_ids = np.unique(np.concatenate([matrix_pids, pid]))
    vm = VoteMatrix.from_triples(
        np.searchsorted(participant_ids, pid),
        np.searchsorted(statement_ids, tid),
        val,
        n_participants=len(participant_ids),
        n_statements=len(statement_ids),
    )

    n_s = len(statement_ids)
    col_of = np.searchsorted(statement_ids, comment_tids)
    moderated = np.zeros(n_s, dtype=bool)
    texts = [""] * n_s
    agrees = np.zeros(n_s, dtype=np.int64)
    disagrees = np.zeros(n_s, dtype=np.int64)
    gic = np.full(n_s, np.nan) if "group-informed-consensus" in ci else None
    for col, r in zip(col_of, c_rows, strict=True):
        mod = int(r[ci["moderated"]])
        meta = "is-meta" in ci and r[ci["is-meta"]].strip().lower() == "true"
        moderated[col] = mod == -1 or meta
        texts[col] = r[ci["comment-body"]]
        agrees[col] = int(r[ci["agrees"]] or 0)
        disagrees[col] = int(r[ci["disagrees"]] or 0)
        if gic is not None and r[ci["group-informed-consensus"]] != "":
            gic[col] = float(r[ci["group-informed-consensus"]])

    n_p = len(participant_ids)
    row_of = np.searchsorted(participant_ids, matrix_pids)
    exported_group = np.full(n_p, -1, dtype=np.int64)
    pcounts = {k: np.zeros(n_p, dtype=np.int64) for k in ("n-votes", "n-agree", "n-disagree")}
    for row, r in zip(row_of, p_rows, strict=True):
        if r[pi["group-id"]] != "":
            exported_group[row] = int(r[pi["group-id"]])
        for k in pcounts:
            pcounts[k][row] = int(r[pi[k]] or 0)
    return PolisExport(
        matrix=vm,
        participant_ids=participant_ids,
        statement_ids=statement_ids,
        moderated_out=moderated,
        texts=texts,
        exported_group=exported_group,
        exported_gic=gic,
        exported_agrees=agrees,
        exported_disagrees=disagrees,
        exported_participant_counts=pcounts,
        source=source,
    )


def _load_votes_csv(path: Path):
    """votes.csv -> (timestamp, comment-id, voter-id, vote) int arrays. Column order by header."""
    header, rows = _read_csv(path)
    h = {name: i for i, name in enumerate(header)}
    arr = np.array(
        [(r[h["timestamp"]], r[h["comment-id"]], r[h["voter-id"]], r[h["vote"]]) for r in rows],
        dtype=np.int64,
    ).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
