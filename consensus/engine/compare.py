"""Compare the ideas of two engine runs by the proposals they share (no Django).

Each run is a labelling of proposals: ``items`` (proposal ids) and ``labels`` (idea numbers, -1 for
a proposal in no idea). Ideas of run A are mapped to ideas of run B through the contingency table
of their members:

* ``b`` is a *successor* of A-idea ``a`` when at least ``min_share`` of ``a``'s members are in
  ``b``; ``a`` is a *predecessor* of ``b`` when at least ``min_share`` of ``b``'s members come
  from ``a``, or when ``b`` is a successor of ``a``. Links also need ``min_overlap`` shared
  proposals, so one stray proposal never counts.
* an A idea with two or more successors **split**; a B idea with two or more predecessors is a
  **merge**; an A idea without successor **disappeared** (its proposals went to no idea, to many
  small ones, or left the run); a B idea without predecessor **appeared**; an A idea and a B idea
  that are each other's only link are **kept** (with their Jaccard index).

Shares are computed on each idea's full membership, so proposals present in one run only (accepted
later, or refused since) count against the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEPT, SPLIT, MERGED, APPEARED, DISAPPEARED = "kept", "split", "merged", "appeared", "disappeared"


@dataclass(frozen=True)
class IdeaChange:
    kind: str  # KEPT, SPLIT, MERGED, APPEARED or DISAPPEARED
    a: tuple[int, ...]  # idea numbers in run A
    b: tuple[int, ...]  # idea numbers in run B
    shared: int  # proposals shared by the ideas of a and b
    jaccard: float  # |members(a) & members(b)| / |members(a) | members(b)|


@dataclass
class Comparison:
    a_ideas: np.ndarray  # idea numbers of run A, sorted
    b_ideas: np.ndarray
    a_sizes: np.ndarray  # members per idea (whole run)
    b_sizes: np.ndarray
    overlap: np.ndarray  # (len(a_ideas), len(b_ideas)) shared proposals
    changes: list[IdeaChange] = field(default_factory=list)
    best_match: dict[int, int | None] = field(default_factory=dict)  # a idea -> b idea (Jaccard)
    # a idea -> the one b idea that holds at least ``min_share`` of its members (kept, or merged
    # into it); ideas that split or disappeared have none
    successor: dict[int, int] = field(default_factory=dict)
    n_common: int = 0  # proposals present in both runs
    n_moved: int = 0  # common proposals whose idea is not the best match of their former idea
    ari: float | None = None  # adjusted Rand index over common proposals ("no idea" is a label)

    def of_kind(self, kind: str) -> list[IdeaChange]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(self.of_kind(k)) for k in (KEPT, SPLIT, MERGED, APPEARED, DISAPPEARED)}


def _check(items: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    items = np.asarray(items, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if items.shape != labels.shape:
        raise ValueError(f"{name}: items and labels differ in length")
    if np.unique(items).shape[0] != items.shape[0]:
        raise ValueError(f"{name}: an item appears twice")
    return items, labels


def _ari(x: np.ndarray, y: np.ndarray) -> float | None:
    """Adjusted Rand index of two labellings of the same items (Hubert and Arabie)."""
    n = x.shape[0]
    if n < 2:
        return None
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((xi.max() + 1, yi.max() + 1), dtype=np.float64)
    np.add.at(table, (xi, yi), 1.0)

    def pairs(v):
        return float((v * (v - 1) / 2).sum())

    index = pairs(table)
    a, b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = a * b / (n * (n - 1) / 2)
    top = (a + b) / 2
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


def compare_runs(
    a_items,
    a_labels,
    b_items,
    b_labels,
    *,
    min_share: float = 0.2,
    min_overlap: int = 2,
) -> Comparison:
    """Map the ideas of run A to those of run B (see the module docstring)."""
    if not 0.0 < min_share <= 1.0:
        raise ValueError("min_share must be in (0, 1]")
    a_items, a_labels = _check(a_items, a_labels, "run A")
    b_items, b_labels = _check(b_items, b_labels, "run B")
    a_ideas, a_sizes = np.unique(a_labels[a_labels >= 0], return_counts=True)
    b_ideas, b_sizes = np.unique(b_labels[b_labels >= 0], return_counts=True)

    common, ia, ib = np.intersect1d(a_items, b_items, assume_unique=True, return_indices=True)
    la, lb = a_labels[ia], b_labels[ib]
    both = (la >= 0) & (lb >= 0)
    overlap = np.zeros((a_ideas.shape[0], b_ideas.shape[0]), dtype=np.int64)
    np.add.at(overlap, (np.searchsorted(a_ideas, la[both]), np.searchsorted(b_ideas, lb[both])), 1)

    floor = overlap >= min_overlap
    forward = floor & (overlap >= min_share * a_sizes[:, None])  # share of a's members
    backward = floor & (overlap >= min_share * b_sizes[None, :])  # share of b's members
    successors = [np.flatnonzero(forward[i]) for i in range(a_ideas.shape[0])]
    # b's predecessors: the A ideas that make up a good part of b, or that went mostly into b
    linked = forward | backward
    predecessors = [np.flatnonzero(linked[:, j]) for j in range(b_ideas.shape[0])]
    union = a_sizes[:, None] + b_sizes[None, :] - overlap
    jaccard = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)

    def change(kind, ai, bj):
        ai, bj = np.asarray(ai, dtype=np.int64), np.asarray(bj, dtype=np.int64)
        shared = int(overlap[np.ix_(ai, bj)].sum()) if ai.size and bj.size else 0
        union_size = int(a_sizes[ai].sum() + b_sizes[bj].sum()) - shared
        return IdeaChange(
            kind=kind,
            a=tuple(int(a_ideas[i]) for i in ai),
            b=tuple(int(b_ideas[j]) for j in bj),
            shared=shared,
            jaccard=round(shared / union_size, 4) if union_size else 0.0,
        )

    changes: list[IdeaChange] = []
    for i, succ in enumerate(successors):
        if succ.size == 0:
            changes.append(change(DISAPPEARED, [i], []))
        elif succ.size >= 2:
            changes.append(change(SPLIT, [i], succ))
        elif predecessors[succ[0]].tolist() == [i]:
            changes.append(change(KEPT, [i], succ))
    for j, pred in enumerate(predecessors):
        if pred.size == 0:
            changes.append(change(APPEARED, [], [j]))
        elif pred.size >= 2:
            changes.append(change(MERGED, pred, [j]))

    best_match: dict[int, int | None] = {}
    for i in range(a_ideas.shape[0]):
        j = int(np.argmax(jaccard[i])) if b_ideas.shape[0] else -1
        best_match[int(a_ideas[i])] = (
            int(b_ideas[j]) if j >= 0 and overlap[i, j] >= min_overlap else None
        )

    # a common proposal "moved" when it was in an idea and is not in that idea's best match now
    target = np.full(a_ideas.shape[0], -2, dtype=np.int64)
    for i, number in enumerate(a_ideas):
        match = best_match[int(number)]
        if match is not None:
            target[i] = match
    was_in = la >= 0
    moved = int(np.count_nonzero(target[np.searchsorted(a_ideas, la[was_in])] != lb[was_in]))
    return Comparison(
        a_ideas=a_ideas,
        b_ideas=b_ideas,
        a_sizes=a_sizes,
        b_sizes=b_sizes,
        overlap=overlap,
        changes=changes,
        best_match=best_match,
        successor={
            int(a_ideas[i]): int(b_ideas[succ[0]])
            for i, succ in enumerate(successors)
            if succ.size == 1
        },
        n_common=int(common.shape[0]),
        n_moved=moved,
        ari=_ari(la, lb),
    )
