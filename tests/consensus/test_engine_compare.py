"""consensus.engine.compare: mapping the ideas of two runs by shared proposals, on arrays."""

import numpy as np
import pytest

from consensus.engine.compare import (
    APPEARED,
    DISAPPEARED,
    KEPT,
    MERGED,
    SPLIT,
    compare_runs,
)


def _labels(groups: dict[int, range]) -> tuple[np.ndarray, np.ndarray]:
    items = np.concatenate([np.asarray(r) for r in groups.values()])
    labels = np.concatenate([np.full(len(r), k) for k, r in groups.items()])
    return items, labels


def test_identical_runs_keep_every_idea():
    items, labels = _labels({0: range(0, 10), 1: range(10, 25), -1: range(25, 28)})
    cmp = compare_runs(items, labels, items[::-1], labels[::-1])
    assert cmp.counts == {KEPT: 2, SPLIT: 0, MERGED: 0, APPEARED: 0, DISAPPEARED: 0}
    assert all(c.jaccard == 1.0 for c in cmp.of_kind(KEPT))
    assert cmp.best_match == {0: 0, 1: 1}
    assert cmp.n_moved == 0 and cmp.ari == pytest.approx(1.0)


def test_renumbered_ideas_are_matched_by_members_not_numbers():
    a = _labels({0: range(0, 10), 1: range(10, 20)})
    b = _labels({7: range(0, 10), 3: range(10, 20)})
    cmp = compare_runs(*a, *b)
    assert cmp.best_match == {0: 7, 1: 3}
    assert {(c.a, c.b) for c in cmp.of_kind(KEPT)} == {((0,), (7,)), ((1,), (3,))}


def test_split_merge_appear_and_disappear_are_named():
    # A: 0 = 0..19 (splits into B 10 and 11), 1 = 20..29 and 2 = 30..39 (merge into B 12),
    #    3 = 40..49 (its proposals fall into no idea), 4 = 50..59 (kept as B 13)
    a = _labels({0: range(0, 20), 1: range(20, 30), 2: range(30, 40), 3: range(40, 50),
                 4: range(50, 60)})  # fmt: skip
    # B: 14 = new proposals 100..111 only
    b = _labels({10: range(0, 10), 11: range(10, 20), 12: range(20, 40), -1: range(40, 50),
                 13: range(50, 60), 14: range(100, 112)})  # fmt: skip
    cmp = compare_runs(*a, *b)
    assert [(c.a, c.b) for c in cmp.of_kind(SPLIT)] == [((0,), (10, 11))]
    assert [(c.a, c.b) for c in cmp.of_kind(MERGED)] == [((1, 2), (12,))]
    assert [c.a for c in cmp.of_kind(DISAPPEARED)] == [(3,)]
    assert [c.b for c in cmp.of_kind(APPEARED)] == [(14,)]
    assert [(c.a, c.b, c.jaccard) for c in cmp.of_kind(KEPT)] == [((4,), (13,), 1.0)]
    split = cmp.of_kind(SPLIT)[0]
    assert split.shared == 20 and split.jaccard == 1.0
    assert cmp.n_common == 60
    # half of idea 0 is outside its best match (10 or 11) and idea 3's ten went to no idea;
    # ideas 1 and 2 both have B 12 as best match, so their proposals did not move
    assert cmp.n_moved == 10 + 10
    assert cmp.overlap.sum() == 50


def test_a_few_stray_proposals_do_not_make_a_split():
    a = _labels({0: range(0, 30)})
    b_items, b_labels = _labels({0: range(0, 29), 1: range(29, 30)})
    cmp = compare_runs(*a, b_items, b_labels, min_share=0.2, min_overlap=2)
    assert cmp.counts[SPLIT] == 0 and cmp.counts[KEPT] == 1
    assert cmp.counts[APPEARED] == 1  # idea 1 has 1 proposal from A: below min_overlap


def test_min_share_decides_what_counts_as_a_split():
    a = _labels({0: range(0, 100)})
    b = _labels({0: range(0, 85), 1: range(85, 100)})
    assert compare_runs(*a, *b, min_share=0.1).counts[SPLIT] == 1
    assert compare_runs(*a, *b, min_share=0.2).counts[SPLIT] == 0


def test_empty_runs_and_bad_input():
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    cmp = compare_runs(*empty, *empty)
    assert cmp.changes == [] and cmp.ari is None and cmp.n_common == 0
    b = _labels({0: range(5)})
    assert compare_runs(*empty, *b).counts[APPEARED] == 1
    with pytest.raises(ValueError):
        compare_runs([1, 2], [0], *b)
    with pytest.raises(ValueError):
        compare_runs([1, 1], [0, 0], *b)
    with pytest.raises(ValueError):
        compare_runs(*b, *b, min_share=0.0)


def test_ari_matches_scikit_learn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    items = np.arange(300)
    a, b = rng.integers(-1, 6, 300), rng.integers(-1, 4, 300)
    b[:150] = a[:150]
    cmp = compare_runs(items, a, items, b)
    assert cmp.ari == pytest.approx(adjusted_rand_score(a, b))


def test_ideas_that_went_mostly_into_a_large_idea_count_as_merged_into_it():
    # three small A ideas all land in one big B idea, each a small share of it
    a = _labels({0: range(0, 10), 1: range(10, 20), 2: range(20, 30)})
    b = _labels({9: range(0, 100)})
    cmp = compare_runs(*a, *b, min_share=0.2)
    assert [(c.a, c.b) for c in cmp.of_kind(MERGED)] == [((0, 1, 2), (9,))]
    assert cmp.counts[KEPT] == 0 and cmp.counts[APPEARED] == 0
