"""Main sequence selection (consultations/sequence.py): pure functions, no database."""

import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from consensus.engine.scores import KEYS
from consultations.sequence import (
    POOL_EXCLUDED,
    POOL_NEW,
    POOL_TESTED,
    Candidate,
    CandidatePool,
    SequenceSettings,
    controversy_slots,
    proposal_pools,
    select_sequence,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)

CONSENSUAL = {"agree": 85, "disagree": 5, "neutral": 10, "like_it": 30, "doable": 25}
CONTROVERSIAL = {"agree": 48, "disagree": 47, "neutral": 5, "like_it": 20, "no_way": 20}
REJECTED = {"agree": 3, "disagree": 90, "neutral": 7, "no_way": 40}


def scaled(profile, total):
    """The same vote shares with ``total`` sequence votes."""
    factor = total / 100
    return {k: round(v * factor) for k, v in profile.items()}


def make(i, *, votes=0, profile=CONSENSUAL, author=None, keywords=(), age_days=None):
    counts = scaled(profile, votes) if votes else {}
    return Candidate(
        id=i,
        author_key=f"author-{i}" if author is None else author,
        created_at=T0 + timedelta(days=i if age_days is None else age_days),
        keywords=frozenset(keywords),
        verified=counts,
        sequence=counts,
    )


def new_and_tested(n_new=20, n_tested=60):
    new = [make(i, votes=0) for i in range(n_new)]
    tested = [make(1000 + i, votes=100) for i in range(n_tested)]
    return new + tested


def by_reason(cards, reason):
    return [c.id for c in cards if c.reason == reason]


def test_pools_split_on_sequence_vote_thresholds():
    pools = proposal_pools(
        sequence_votes=np.array([0, 9, 10, 1499, 1500, 4000]), settings=SequenceSettings()
    )
    assert pools.tolist() == [
        POOL_NEW,
        POOL_NEW,
        POOL_TESTED,
        POOL_TESTED,
        POOL_EXCLUDED,
        POOL_EXCLUDED,
    ]


def test_optional_score_threshold_excludes_weak_tested_proposals():
    pool = CandidatePool.from_candidates(
        [make(1, votes=200, profile=CONSENSUAL), make(2, votes=200, profile=REJECTED), make(3)]
    )
    pools = pool.pools(SequenceSettings(tested_score_threshold=0.5))
    assert pools.tolist() == [POOL_TESTED, POOL_EXCLUDED, POOL_NEW]
    assert pool.pools(SequenceSettings()).tolist() == [POOL_TESTED, POOL_TESTED, POOL_NEW]


def test_new_proposals_fill_thirty_percent_oldest_first():
    candidates = new_and_tested()
    cards = select_sequence(candidates=candidates, rng=1)

    assert len(cards) == 12
    # ceil(0.3 * 12) = 4 new cards: the four oldest new proposals.
    assert sorted(by_reason(cards, "new")) == [0, 1, 2, 3]
    assert len(by_reason(cards, "top")) + len(by_reason(cards, "controversy")) == 8


def test_new_quota_takes_one_proposal_per_author():
    candidates = [make(i, author="prolific") for i in range(5)] + [make(i) for i in range(5, 20)]
    candidates += [make(1000 + i, votes=100) for i in range(40)]
    cards = select_sequence(candidates=candidates, rng=2)
    # Only the oldest proposal of "prolific"; then the next oldest authors.
    assert sorted(by_reason(cards, "new")) == [0, 5, 6, 7]


def test_every_chosen_card_has_a_different_author():
    authors = [f"a{k}" for k in range(20)]
    candidates = [make(i, author=authors[i % 20]) for i in range(60)]
    candidates += [make(1000 + i, votes=100, author=authors[i % 20]) for i in range(200)]
    by_id = {c.id: c for c in candidates}
    for seed in range(20):
        cards = select_sequence(candidates=candidates, rng=seed)
        assert len(cards) == 12
        assert not by_reason(cards, "fallback")
        card_authors = [by_id[c.id].author_key for c in cards]
        assert len(set(card_authors)) == 12


def test_tested_cards_share_no_keyword_unless_it_is_too_common():
    # 200 tested candidates, keyword kX carried by 2 of them, "budget" by all of them.
    candidates = [make(1000 + i, votes=100, keywords={f"k{i % 100}", "budget"}) for i in range(200)]
    by_id = {c.id: c for c in candidates}
    for seed in range(20):
        cards = select_sequence(candidates=candidates, rng=seed)
        # "budget" is carried by >= 20 % of the candidates: ignored, so it blocks nothing.
        assert len(cards) == 12
        assert not by_reason(cards, "fallback")
        specific = [by_id[c.id].keywords - {"budget"} for c in cards]
        assert len(set().union(*specific)) == 12


def test_shared_rare_keyword_blocks_the_second_card():
    # Keyword kX is carried by 2 candidates. Among only 10 candidates that is
    # >= floor(0.2 * 10) = 2, so it is ignored ...
    few = [make(1000 + i, votes=100, keywords={f"k{i // 2}"}) for i in range(10)]
    assert len(by_reason(select_sequence(candidates=few, rng=0), "top")) == 10
    # ... but among 100 candidates it is rare and blocks: at most one card per keyword.
    many = [make(1000 + i, votes=100, keywords={f"k{i // 2}"}) for i in range(20)] + [
        make(2000 + i, votes=100, keywords={f"z{i}"}) for i in range(80)
    ]
    by_id = {c.id: c for c in many}
    for seed in range(10):
        cards = select_sequence(candidates=many, rng=seed)
        keywords = [k for c in cards for k in by_id[c.id].keywords]
        assert len(keywords) == len(set(keywords)) == 12


def test_already_voted_proposals_are_never_shown():
    candidates = new_and_tested(n_new=30, n_tested=90)
    ids = [c.id for c in candidates]
    rng = np.random.default_rng(0)
    for seed in range(20):
        voted = set(rng.choice(ids, size=100, replace=False).tolist())
        cards = select_sequence(candidates=candidates, voted_ids=voted, rng=seed)
        shown = [c.id for c in cards]
        assert not voted & set(shown)
        assert len(shown) == len(set(shown)) == 12  # 20 unvoted left: enough with the fallback


def test_included_proposals_come_first_in_order():
    candidates = new_and_tested()
    cards = select_sequence(candidates=candidates, included_ids=[1005, 7], rng=3)
    assert [(c.id, c.reason) for c in cards[:2]] == [(1005, "included"), (7, "included")]
    assert len(cards) == 12
    assert [c.id for c in cards].count(7) == 1
    # Proposal 7 is new: it counts towards the new quota (4 - 1 = 3 more new cards).
    assert sorted(by_reason(cards, "new")) == [0, 1, 2]


def test_included_proposal_is_shown_even_if_unknown_or_voted():
    cards = select_sequence(
        candidates=new_and_tested(), included_ids=["shared-link", 0], voted_ids={0}, rng=4
    )
    assert [c.id for c in cards[:2]] == ["shared-link", 0]
    assert 0 not in [c.id for c in cards[2:]]


def test_one_controversy_slot_among_eight_tested_slots():
    candidates = [make(i) for i in range(10)]
    candidates += [make(1000 + i, votes=200, profile=CONSENSUAL) for i in range(40)]
    candidates += [make(2000 + i, votes=200, profile=CONTROVERSIAL) for i in range(40)]
    for seed in range(10):
        cards = select_sequence(candidates=candidates, rng=seed)
        assert len(by_reason(cards, "controversy")) == 1
        assert all(i >= 2000 for i in by_reason(cards, "controversy"))
        assert len(by_reason(cards, "top")) == 7
        assert all(1000 <= i < 2000 for i in by_reason(cards, "top"))


@pytest.mark.parametrize(
    ("tested_slots", "ratio", "expected"),
    [
        (8, 0.1, 1),
        (3, 0.1, 1),
        (5, 0.1, 1),
        (15, 0.1, 2),
        (20, 0.1, 2),
        (25, 0.1, 3),
        (0, 0.1, 0),
        (8, 0.0, 0),
        (2, 1.0, 2),
    ],
)
def test_controversy_slots_round_half_up_with_at_least_one(tested_slots, ratio, expected):
    assert controversy_slots(tested_slots=tested_slots, controversy_ratio=ratio) == expected


def test_unused_controversy_slot_goes_to_tops():
    candidates = [make(i) for i in range(10)] + [make(1000 + i, votes=200) for i in range(40)]
    cards = select_sequence(candidates=candidates, rng=5)
    assert not by_reason(cards, "controversy")
    assert len(by_reason(cards, "top")) == 8


def test_rejected_proposals_are_not_picked_as_tested():
    candidates = [make(1000 + i, votes=300, profile=CONSENSUAL) for i in range(30)]
    candidates += [make(2000 + i, votes=300, profile=REJECTED) for i in range(30)]
    for seed in range(10):
        cards = select_sequence(candidates=candidates, rng=seed)
        assert all(c.id < 2000 for c in cards)


def test_window_prefers_the_least_voted_candidates():
    # All consensual; the window covers the whole list, so the least-voted win.
    candidates = [make(1000 + i, votes=20 + 10 * i) for i in range(30)]
    settings = SequenceSettings(size=3, new_ratio=0, controversy_ratio=0, candidates_pool_size=50)
    cards = select_sequence(candidates=candidates, settings=settings, rng=6)
    assert sorted(c.id for c in cards) == [1000, 1001, 1002]
    assert {c.reason for c in cards} == {"top"}


def test_fallback_fills_with_newest_remaining_proposals():
    # Everything has graduated (>= 1500 sequence votes): no new, no tested.
    candidates = [make(i, votes=1600) for i in range(20)]
    cards = select_sequence(candidates=candidates, voted_ids={19}, rng=7)
    assert [c.id for c in cards] == list(range(18, 6, -1))
    assert {c.reason for c in cards} == {"fallback"}


def test_fallback_completes_a_short_sequence_after_the_shuffled_cards():
    candidates = [make(i) for i in range(2)] + [make(100 + i, votes=2000) for i in range(20)]
    cards = select_sequence(candidates=candidates, rng=8)
    assert sorted(c.id for c in cards[:2]) == [0, 1]
    assert [c.id for c in cards[2:]] == list(range(119, 109, -1))


def test_same_seed_gives_the_same_sequence():
    candidates = new_and_tested(n_tested=300)
    first = select_sequence(candidates=candidates, rng=123)
    assert first == select_sequence(candidates=candidates, rng=123)
    others = {tuple(c.id for c in select_sequence(candidates=candidates, rng=s)) for s in range(5)}
    assert len(others) > 1


def test_output_is_shuffled_not_grouped_by_pool():
    candidates = new_and_tested()
    first_reasons = {select_sequence(candidates=candidates, rng=s)[0].reason for s in range(30)}
    assert first_reasons == {"new", "top"}


def test_empty_candidates_give_an_empty_sequence():
    assert select_sequence(candidates=[], rng=0) == []
    cards = select_sequence(candidates=[], included_ids=[5], rng=0)
    assert [(c.id, c.reason) for c in cards] == [(5, "included")]


def test_fewer_candidates_than_size_returns_them_all_once():
    candidates = [make(0), make(1), make(1000, votes=100), make(1001, votes=2000)]
    cards = select_sequence(candidates=candidates, rng=9)
    assert sorted(c.id for c in cards) == [0, 1, 1000, 1001]
    assert {c.id: c.reason for c in cards}[1001] == "fallback"


def test_reused_pool_gives_the_same_result_as_a_candidate_list():
    candidates = new_and_tested()
    pool = CandidatePool.from_candidates(candidates)
    assert select_sequence(candidates=pool, rng=10) == select_sequence(
        candidates=candidates, rng=10
    )


def test_added_votes_move_a_proposal_from_new_to_tested():
    pool = CandidatePool.from_candidates([make(0), make(1)])
    delta = np.zeros((1, len(KEYS)))
    delta[0, KEYS.index("agree")] = 10
    pool.add_counts(rows=np.array([0]), delta=delta)
    assert pool.pools(SequenceSettings()).tolist() == [POOL_TESTED, POOL_NEW]
    pool.add_counts(rows=np.array([1]), delta=delta, sequence=False)
    assert pool.sequence_votes.tolist() == [10, 0]
    assert pool.verified[:, 0].tolist() == [10, 10]


def test_selecting_among_twenty_thousand_candidates_is_fast():
    rng = np.random.default_rng(0)
    n = 20_000
    votes = rng.integers(0, 1600, n)
    votes[:3000] = rng.integers(0, 10, 3000)
    agree = rng.binomial(votes, rng.uniform(0.1, 0.9, n))
    disagree = rng.binomial(votes - agree, 0.7)
    counts = {
        "agree": agree,
        "disagree": disagree,
        "neutral": votes - agree - disagree,
        "like_it": rng.binomial(agree, 0.3),
        "no_way": rng.binomial(disagree, 0.3),
    }
    pool = CandidatePool(
        ids=list(range(n)),
        author_keys=rng.integers(0, 5000, n).tolist(),
        created_at=rng.uniform(0, 1e6, n).tolist(),
        keywords=[frozenset({f"k{rng.integers(300)}", f"k{rng.integers(300)}"}) for _ in range(n)],
        verified={k: 2 * v for k, v in counts.items()},
        sequence=counts,
    )
    voted = set(rng.integers(0, n, 300).tolist())
    timings = []
    for seed in range(15):
        start = time.perf_counter()
        cards = select_sequence(candidates=pool, voted_ids=voted, rng=seed)
        timings.append(time.perf_counter() - start)
        assert len(cards) == 12
    assert statistics.median(timings) < 0.05


def test_a_built_pool_leaves_nothing_per_candidate_for_the_garbage_collector():
    # A web process keeps large pools for minutes; every object the collector tracks is walked
    # by each full collection (100,000 frozensets added 25 ms to each one).
    import gc

    gc.collect()
    before = len(gc.get_objects())
    candidates = [make(i, keywords=("vélo", f"mot{i}", "piste")) for i in range(2_000)]
    pool = CandidatePool.from_candidates(candidates)
    del candidates
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert pool.keywords[7] == ("mot7", "piste", "vélo")
