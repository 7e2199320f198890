"""Per-segment agreement (age range, gender, postal area) with k-anonymity suppression.

Pure numpy, no Django. Inputs are per-vote arrays (statement index, participant index,
value +1/-1/0) and a per-participant segment code (-1: no segment, left out everywhere).
A (segment, statement) cell with fewer than ``k`` distinct participants is suppressed:
its counts and agreement are NaN, never a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOOTH_PRIOR = 0.33  # Make.org smoothing: (n_agree + 0.33) / (N + 1)
DEFAULT_K = 10


@dataclass
class SegmentCells:
    """Arrays shaped (n_segments, n_statements); suppressed cells hold NaN."""

    agree: np.ndarray
    disagree: np.ndarray
    neutral: np.ndarray
    participants: np.ndarray
    agreement: np.ndarray
    suppressed: np.ndarray  # bool


def segment_cells(
    statements: np.ndarray,
    participants: np.ndarray,
    values: np.ndarray,
    segment_of: np.ndarray,
    *,
    n_statements: int,
    n_segments: int,
    k: int = DEFAULT_K,
) -> SegmentCells:
    if k < 1:
        raise ValueError("k must be at least 1")
    statements = np.asarray(statements, dtype=np.int64)
    participants = np.asarray(participants, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    segment_of = np.asarray(segment_of, dtype=np.int64)
    seg = segment_of[participants] if participants.size else np.zeros(0, np.int64)
    keep = seg >= 0
    seg, st, val, part = seg[keep], statements[keep], values[keep], participants[keep]
    size = n_segments * n_statements
    cell = seg * n_statements + st
    agree = np.bincount(cell[val > 0], minlength=size).astype(float)
    disagree = np.bincount(cell[val < 0], minlength=size).astype(float)
    neutral = np.bincount(cell[val == 0], minlength=size).astype(float)
    # distinct participants per cell (a participant may vote twice on one statement in raw input)
    n_part = np.int64(max(int(participants.max()) + 1 if participants.size else 1, 1))
    pairs = np.sort(cell * n_part + part)  # sort + diff: faster than np.unique's hash path
    if pairs.size:
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
    distinct = np.bincount(pairs // n_part, minlength=size).astype(float)
    total = agree + disagree + neutral
    agreement = (agree + SMOOTH_PRIOR) / (total + 1.0)
    suppressed = distinct < k
    shape = (n_segments, n_statements)
    out = []
    for arr in (agree, disagree, neutral, distinct, agreement):
        arr = arr.copy()
        arr[suppressed] = np.nan
        out.append(arr.reshape(shape))
    return SegmentCells(*out, suppressed=suppressed.reshape(shape))
